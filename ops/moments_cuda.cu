// CUDA kernels behind ops/moments.h: a grid-stride pass writes one partial per block, one
// block adds the partials in order into the totals (deterministic; no atomics).
#include "ops/cuda_compute.cuh"
#include "ops/moments_kernels.h"

namespace zt::ops {

namespace {

using namespace gpu;

constexpr int kParts = 6;  // sum, squares, count, NaNs, max, max |x|

template <class T>
__global__ void moments_partials_kernel(const T* x, int64_t rows, int64_t cols, int64_t ld, int64_t period,
                                        double* partial) {
  __shared__ double scratch[32];
  double sum = 0, squares = 0, count = 0, nans = 0, mx = -INFINITY, absmax = 0;
  ZT_GRID_STRIDE(e, rows * cols) {
    const int64_t r = e / cols, c = e - r * cols;
    if (period > 0 && c > r % period) continue;
    const double v = static_cast<double>(load<acc_t<T>>(x, r * ld + c));
    if (isnan(v)) {
      nans += 1;
      continue;
    }
    sum += v;
    squares += v * v;
    count += 1;
    mx = fmax(mx, v);
    absmax = fmax(absmax, fabs(v));
  }
  sum = block_sum(sum, scratch);
  squares = block_sum(squares, scratch);
  count = block_sum(count, scratch);
  nans = block_sum(nans, scratch);
  mx = block_max(mx, scratch);
  absmax = block_max(absmax, scratch);
  if (threadIdx.x == 0) {
    double* p = partial + blockIdx.x * kParts;
    p[0] = sum, p[1] = squares, p[2] = count + nans, p[3] = nans, p[4] = mx, p[5] = absmax;
  }
}

__global__ void moments_finish_kernel(const double* partial, int n, double* sums, double* maxes) {
  __shared__ double scratch[32];
  double s[4] = {0, 0, 0, 0}, mx = -INFINITY, absmax = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    for (int k = 0; k < 4; ++k) s[k] += partial[i * kParts + k];
    mx = fmax(mx, partial[i * kParts + 4]);
    absmax = fmax(absmax, partial[i * kParts + 5]);
  }
  for (int k = 0; k < 4; ++k) s[k] = block_sum(s[k], scratch);
  mx = block_max(mx, scratch);
  absmax = block_max(absmax, scratch);
  if (threadIdx.x == 0) {
    for (int k = 0; k < 4; ++k) sums[k] += s[k];
    maxes[0] = fmax(maxes[0], mx);
    maxes[1] = fmax(maxes[1], absmax);
    if (sums[3] > 0) maxes[0] = maxes[1] = NAN;  // fmax drops NaN: the count keeps it
  }
}

}  // namespace

void accumulate_moments_cuda(const Tensor& x, int64_t cols, int64_t period, Tensor& sums, Tensor& maxes) {
  OpRange range("moments");
  cudaStream_t s = stream_for(x);
  const int64_t rows = x.shape()[0], ld = x.strides()[0];
  const int blocks = static_cast<int>(grid_for(rows * cols, x.device().index));
  Tensor partial = Tensor::empty({blocks, kParts}, DType::f64, x.device());
  dispatch_device_float(x.dtype(), "accumulate_moments", [&](auto tag) {
    using T = decltype(tag);
    moments_partials_kernel<T><<<blocks, kThreads, 0, s>>>(static_cast<const T*>(x.raw_data()), rows, cols, ld, period,
                                                           static_cast<double*>(partial.raw_data()));
    ZT_CUDA_CHECK_LAUNCH();
  });
  moments_finish_kernel<<<1, kThreads, 0, s>>>(static_cast<const double*>(partial.raw_data()), blocks,
                                               static_cast<double*>(sums.raw_data()),
                                               static_cast<double*>(maxes.raw_data()));
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::ops
