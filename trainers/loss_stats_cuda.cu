// LossStats on the device: one block reads a micro-batch's per-row lse ([N] f32, or f64 for
// f64 logits: N x 4 bytes, ~64 KiB at 16k rows) and adds its sum and max, and the op's three
// scalar sums, into the step's f64 accumulators. One launch per micro-batch, no host read.
#include <cmath>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/kernel_utils.cuh"
#include "framework/cuda/op_profiler.h"
#include "framework/cuda/stream.h"
#include "trainers/loss_stats.h"

namespace zt::loss_stats_cuda {

namespace {

using cuda::kThreads;

// NaN-propagating max (fmax would drop a NaN: a NaN lse must show in lse_max).
__device__ double nan_max(double a, double b) { return (a != a || b != b) ? __longlong_as_double(0x7ff8000000000000ll) : fmax(a, b); }

template <class T>
__global__ void accumulate_kernel(const T* ce, const T* z, const int64_t* count, const T* lse, int64_t n,
                                  double* sums, double* max) {
  __shared__ double s_sum[kThreads], s_max[kThreads];
  double sum = 0, mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const double v = static_cast<double>(lse[i]);
    sum += v;
    mx = nan_max(mx, v);
  }
  s_sum[threadIdx.x] = sum;
  s_max[threadIdx.x] = mx;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {  // fixed order: the same sum every run
    if (threadIdx.x < o) {
      s_sum[threadIdx.x] += s_sum[threadIdx.x + o];
      s_max[threadIdx.x] = nan_max(s_max[threadIdx.x], s_max[threadIdx.x + o]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    sums[0] += static_cast<double>(*ce);
    sums[1] += static_cast<double>(*z);
    sums[2] += s_sum[0];
    sums[3] += static_cast<double>(*count);
    *max = nan_max(*max, s_max[0]);
  }
}

}  // namespace

void accumulate(const Tensor& ce_sum, const Tensor& z_sum, const Tensor& count, const Tensor& lse, Tensor& sums,
                Tensor& max) {
  ZT_CHECK(lse.is_contiguous() && ce_sum.dtype() == lse.dtype() && z_sum.dtype() == lse.dtype() &&
               count.dtype() == DType::i64 && lse.device() == sums.device(),
           "loss statistics: unexpected cross-entropy outputs (", dtype_name(lse.dtype()), " lse on ",
           lse.device().str(), ")");
  cuda::OpRange range("loss_stats");
  cuda::set_device(sums.device().index);
  const cudaStream_t s = cuda::current_stream();
  if (lse.dtype() == DType::f64) {
    accumulate_kernel<double><<<1, kThreads, 0, s>>>(ce_sum.data<double>(), z_sum.data<double>(),
                                                     count.data<int64_t>(), lse.data<double>(), lse.numel(),
                                                     sums.data<double>(), max.data<double>());
  } else {
    ZT_CHECK(lse.dtype() == DType::f32, "loss statistics: lse of dtype ", dtype_name(lse.dtype()));
    accumulate_kernel<float><<<1, kThreads, 0, s>>>(ce_sum.data<float>(), z_sum.data<float>(), count.data<int64_t>(),
                                                    lse.data<float>(), lse.numel(), sums.data<double>(),
                                                    max.data<double>());
  }
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::loss_stats_cuda
