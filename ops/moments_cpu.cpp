#include <cmath>
#include <vector>

#include "ops/cpu_compute.h"
#include "ops/moments_kernels.h"

namespace zt::ops {

namespace {

struct Partial {
  double sum = 0, squares = 0, count = 0, nans = 0, max = -INFINITY, absmax = 0;
};

}  // namespace

void accumulate_moments_cpu(const Tensor& x_in, int64_t cols, int64_t period, Tensor& sums, Tensor& maxes) {
  Tensor x = x_in.slice(1, 0, cols);
  if (x.dtype() == DType::bf16) x = x.to(DType::f32);
  if (x.strides()[1] != 1) x = x.contiguous();
  const int64_t rows = x.shape()[0], ld = x.strides()[0], n = rows * cols;
  // Fixed blocks of the [rows, cols] elements in row-major order (a long single row splits as
  // well as many short ones), each summed alone, then the blocks in order: the same total for
  // any thread count.
  constexpr int64_t kBlock = cpu::kParallelMin;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<Partial> part(static_cast<size_t>(blocks));
  cpu::dispatch_compute(x.dtype(), "accumulate_moments", [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (int64_t b = 0; b < blocks; ++b) {
      Partial& s = part[static_cast<size_t>(b)];
      const int64_t end = std::min(n, (b + 1) * kBlock);
      for (int64_t e = b * kBlock; e < end;) {  // one row's piece of the block at a time
        const int64_t r = e / cols, c0 = e - r * cols, c1 = std::min(cols, c0 + (end - e));
        const int64_t stop = period > 0 ? std::min(c1, std::max(c0, r % period + 1)) : c1;
        // One vectorised pass over the piece (the simd reductions may reorder the additions,
        // the same way on every run). A NaN makes sums and maxima meaningless: its count says
        // so and the caller reports NaN.
        const T* row = p + r * ld;
        double sum = 0, squares = 0, nans = 0, mx = s.max, absmax = s.absmax;
#pragma omp simd reduction(+ : sum, squares, nans) reduction(max : mx, absmax)
        for (int64_t c = c0; c < stop; ++c) {
          const double v = static_cast<double>(row[c]);
          sum += v;
          squares += v * v;
          nans += v != v ? 1.0 : 0.0;
          mx = v > mx ? v : mx;
          absmax = std::fabs(v) > absmax ? std::fabs(v) : absmax;
        }
        s.sum += sum, s.squares += squares, s.nans += nans, s.max = mx, s.absmax = absmax;
        s.count += static_cast<double>(stop - c0);
        e += c1 - c0;
      }
    }
  });
  double* out = sums.data<double>();
  double* mx = maxes.data<double>();
  for (const Partial& s : part) {
    out[0] += s.sum;
    out[1] += s.squares;
    out[2] += s.count;
    out[3] += s.nans;
    mx[0] = std::max(mx[0], s.max);
    mx[1] = std::max(mx[1], s.absmax);
  }
  if (out[3] > 0) mx[0] = mx[1] = NAN;
}

}  // namespace zt::ops
