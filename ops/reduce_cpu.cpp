#include <Eigen/Core>

#include "ops/cpu_compute.h"
#include "ops/reduce_kernels.h"

namespace zt::ops {

Tensor sum_all_cpu(const Tensor& x_in) {
  const Tensor x = cpu::to_compute(x_in);
  const int64_t n = x.numel();
  Tensor out = Tensor::empty({}, x.dtype());
  cpu::dispatch_compute(x.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
    // Per-thread partial sums; inside each, Eigen's vectorised sum (several running sums
    // in SIMD lanes, which also keeps the rounding error small).
    T total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (n >= cpu::kParallelMin)
    for (int64_t c = 0; c < n; c += cpu::kParallelMin) {
      const int64_t len = std::min<int64_t>(cpu::kParallelMin, n - c);
      total += Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(p + c, len).sum();
    }
    *out.data<T>() = total;
  });
  return out;
}

Tensor sum_rows_cpu(const Tensor& x_in, int64_t cols) {
  const Tensor x = cpu::to_compute(x_in);
  ZT_CHECK(cols > 0 ? x.numel() % cols == 0 : x.numel() == 0, "sum_rows_cpu: ", x.numel(), " elements are not rows of ",
           cols);
  const int64_t rows = cols > 0 ? x.numel() / cols : 0;
  Tensor out = Tensor::empty({cols}, x.dtype());
  cpu::dispatch_compute(x.dtype(), "sum_rows", [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
    cpu::sum_over_rows<T>(rows, cols, out.data<T>(), [&](int64_t r, T* acc) {
      const T* row = p + r * cols;
      for (int64_t j = 0; j < cols; ++j) acc[j] += row[j];
    });
  });
  return out.to(x_in.dtype());
}

}  // namespace zt::ops
