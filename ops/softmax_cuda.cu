// CUDA kernels behind ops/softmax.h: one block per row, statistics in f32 (f64 for f64).
#include "ops/cuda_compute.cuh"
#include "ops/softmax_kernels.h"

namespace zt::ops {

namespace {

using namespace gpu;

template <class A>
__device__ __forceinline__ A exp_of(A v) {
  if constexpr (std::is_same_v<A, double>) return exp(v);
  else return expf(v);
}

template <class T>
__global__ void softmax_forward_kernel(const T* x, T* y, int64_t C) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  const T* xr = x + blockIdx.x * C;
  T* yr = y + blockIdx.x * C;
  A m = -INFINITY;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) m = max(m, load<A>(xr, j));
  m = block_max(m, scratch);
  A s = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += exp_of(load<A>(xr, j) - m);
  s = block_sum(s, scratch);
  const A inv = A(1) / s;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) store(yr, j, exp_of(load<A>(xr, j) - m) * inv);
}

template <class T>
__global__ void softmax_backward_kernel(const T* g, const T* y, T* dx, int64_t C) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  const int64_t off = blockIdx.x * C;
  A dot = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) dot += load<A>(g, off + j) * load<A>(y, off + j);
  dot = block_sum(dot, scratch);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
    store(dx, off + j, load<A>(y, off + j) * (load<A>(g, off + j) - dot));
}

int threads_for(int64_t C) { return C >= 1024 ? 512 : C >= 256 ? 256 : C >= 64 ? 64 : 32; }

}  // namespace

Tensor softmax_forward_cuda(const Tensor& x_in) {
  const Tensor x = x_in.contiguous();
  OpRange range("softmax");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t C = x.dim() == 0 ? 1 : x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  if (rows == 0) return y;
  ZT_CHECK(rows < (int64_t{1} << 31), "softmax: too many rows for the CUDA kernel: ", rows);
  cudaStream_t s = stream_for(x);
  dispatch_device_float(x.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    softmax_forward_kernel<T><<<static_cast<unsigned>(rows), threads_for(C), 0, s>>>(
        static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()), C);
  });
  ZT_CUDA_CHECK_LAUNCH();
  return y;
}

Tensor softmax_backward_cuda(const Tensor& grad_in, const Tensor& y_in) {
  const Tensor g = grad_in.contiguous(), y = y_in.contiguous();
  OpRange range("softmax");
  Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
  const int64_t C = y.dim() == 0 ? 1 : y.shape().back(), rows = C == 0 ? 0 : y.numel() / C;
  if (rows == 0) return dx;
  cudaStream_t s = stream_for(y);
  dispatch_device_float(y.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    softmax_backward_kernel<T><<<static_cast<unsigned>(rows), threads_for(C), 0, s>>>(
        static_cast<const T*>(g.raw_data()), static_cast<const T*>(y.raw_data()), static_cast<T*>(dx.raw_data()), C);
  });
  ZT_CUDA_CHECK_LAUNCH();
  return dx;
}

}  // namespace zt::ops
