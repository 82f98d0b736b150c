// CUDA kernels behind ops/gelu.h (tanh form, GPT-2).
#include "ops/cuda_compute.cuh"
#include "ops/gelu_kernels.h"

namespace zt::ops {

namespace {

using namespace gpu;

template <class A>
__device__ __forceinline__ A tanh_of(A u) {
  if constexpr (std::is_same_v<A, double>) return tanh(u);
  else return tanhf(u);
}

template <class A>
struct GeluForward {
  __device__ A operator()(A v) const {
    const A k0 = A(0.7978845608028654), k1 = A(0.044715);
    return A(0.5) * v * (A(1) + tanh_of(k0 * (v + k1 * v * v * v)));
  }
};

// d gelu / dx times the incoming gradient: f(g, x).
template <class A>
struct GeluBackward {
  __device__ A operator()(A g, A v) const {
    const A k0 = A(0.7978845608028654), k1 = A(0.044715);
    const A t = tanh_of(k0 * (v + k1 * v * v * v));
    return g * (A(0.5) * (A(1) + t) + A(0.5) * v * (A(1) - t * t) * k0 * (A(1) + A(3) * k1 * v * v));
  }
};

}  // namespace

Tensor gelu_forward_cuda(const Tensor& x_in) {
  const Tensor x = x_in.contiguous();
  OpRange range("gelu");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t n = x.numel();
  if (n == 0) return y;
  cudaStream_t s = stream_for(x);
  dispatch_device_float(x.dtype(), "gelu", [&](auto tag) {
    using T = decltype(tag);
    launch_map1(static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()), n, x.device().index, s,
                GeluForward<acc_t<T>>{});
  });
  return y;
}

Tensor gelu_backward_cuda(const Tensor& grad_in, const Tensor& x_in) {
  const Tensor g = grad_in.contiguous(), x = x_in.contiguous();
  OpRange range("gelu");
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t n = x.numel();
  if (n == 0) return dx;
  cudaStream_t s = stream_for(x);
  dispatch_device_float(x.dtype(), "gelu", [&](auto tag) {
    using T = decltype(tag);
    launch_map2(static_cast<const T*>(g.raw_data()), static_cast<const T*>(x.raw_data()), static_cast<T*>(dx.raw_data()),
                n, x.device().index, s, GeluBackward<acc_t<T>>{});
  });
  return dx;
}

}  // namespace zt::ops
