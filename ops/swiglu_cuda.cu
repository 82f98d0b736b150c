// CUDA kernels behind ops/swiglu.h: one elementwise pass each way; rows whose halves are whole
// 16-byte packs (F a multiple of 8 bf16 or 4 f32, aligned buffers) are read and written in packs.
#include <initializer_list>

#include "ops/cuda_compute.cuh"
#include "ops/swiglu_kernels.h"

namespace zt::ops {

namespace {

using namespace gpu;

template <class A>
__device__ __forceinline__ A sigmoid_of(A a) {
  if constexpr (std::is_same_v<A, double>) return 1.0 / (1.0 + exp(-a));
  else return 1.0f / (1.0f + expf(-a));
}

// silu(a) b.
template <class A>
__device__ __forceinline__ A swiglu_value(A a, A b) {
  return a * sigmoid_of(a) * b;
}

// da = g b s (1 + a (1 - s)), db = g silu(a), s = sigmoid(a).
template <class A>
__device__ __forceinline__ void swiglu_grads(A g, A a, A b, A& da, A& db) {
  const A s = sigmoid_of(a);
  da = g * b * s * (A(1) + a * (A(1) - s));
  db = g * a * s;
}

// y [rows, F] from x [rows, 2F]. fpacks = F / kN when the packed path applies, else 0.
template <class T>
__global__ void swiglu_forward_kernel(const T* x, T* y, int64_t rows, int64_t F, int64_t fpacks) {
  using A = acc_t<T>;
  constexpr int N = Pack<T>::kN;
  if (fpacks > 0) {
    ZT_GRID_STRIDE(p, rows * fpacks) {
      const int64_t r = p / fpacks, c = p - r * fpacks;
      const Pack<T> a = load_pack(x, r * 2 * fpacks + c), b = load_pack(x, r * 2 * fpacks + fpacks + c);
      Pack<T> out;
#pragma unroll
      for (int j = 0; j < N; ++j) store(out.v, j, swiglu_value(load<A>(a.v, j), load<A>(b.v, j)));
      store_pack(y, p, out);
    }
    return;
  }
  ZT_GRID_STRIDE(i, rows * F) {
    const int64_t r = i / F, j = i - r * F;
    store(y, i, swiglu_value(load<A>(x, r * 2 * F + j), load<A>(x, r * 2 * F + F + j)));
  }
}

// dx [rows, 2F] from g [rows, F] and x [rows, 2F].
template <class T>
__global__ void swiglu_backward_kernel(const T* g, const T* x, T* dx, int64_t rows, int64_t F, int64_t fpacks) {
  using A = acc_t<T>;
  constexpr int N = Pack<T>::kN;
  if (fpacks > 0) {
    ZT_GRID_STRIDE(p, rows * fpacks) {
      const int64_t r = p / fpacks, c = p - r * fpacks;
      const int64_t pa = r * 2 * fpacks + c, pb = pa + fpacks;
      const Pack<T> a = load_pack(x, pa), b = load_pack(x, pb), gp = load_pack(g, p);
      Pack<T> da, db;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        A va, vb;
        swiglu_grads(load<A>(gp.v, j), load<A>(a.v, j), load<A>(b.v, j), va, vb);
        store(da.v, j, va);
        store(db.v, j, vb);
      }
      store_pack(dx, pa, da);
      store_pack(dx, pb, db);
    }
    return;
  }
  ZT_GRID_STRIDE(i, rows * F) {
    const int64_t r = i / F, j = i - r * F;
    const int64_t ia = r * 2 * F + j, ib = ia + F;
    A va, vb;
    swiglu_grads(load<A>(g, i), load<A>(x, ia), load<A>(x, ib), va, vb);
    store(dx, ia, va);
    store(dx, ib, vb);
  }
}

// F / kN when every row's halves are whole, aligned 16-byte packs, else 0.
template <class T>
int64_t packs_of_half(int64_t F, std::initializer_list<const void*> ptrs) {
  constexpr int N = Pack<T>::kN;
  if (F % N != 0) return 0;
  for (const void* p : ptrs)
    if (!aligned16(p)) return 0;
  return F / N;
}

}  // namespace

Tensor swiglu_forward_cuda(const Tensor& x_in) {
  const Tensor x = x_in.contiguous();
  OpRange range("swiglu");
  Shape ys = x.shape();
  ys.back() /= 2;
  Tensor y = Tensor::empty(ys, x.dtype(), x.device());
  const int64_t F = ys.back(), rows = F == 0 ? 0 : y.numel() / F;
  if (rows == 0) return y;
  cudaStream_t s = stream_for(x);
  dispatch_device_float(x.dtype(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    const int64_t fpacks = packs_of_half<T>(F, {x.raw_data(), y.raw_data()});
    const int64_t work = fpacks > 0 ? rows * fpacks : rows * F;
    swiglu_forward_kernel<T><<<grid_for(work, x.device().index), kThreads, 0, s>>>(
        static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()), rows, F, fpacks);
  });
  ZT_CUDA_CHECK_LAUNCH();
  return y;
}

Tensor swiglu_backward_cuda(const Tensor& grad_in, const Tensor& x_in) {
  const Tensor g = grad_in.contiguous(), x = x_in.contiguous();
  OpRange range("swiglu");
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t F = x.shape().back() / 2, rows = F == 0 ? 0 : x.numel() / (2 * F);
  if (rows == 0) return dx;
  cudaStream_t s = stream_for(x);
  dispatch_device_float(x.dtype(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    const int64_t fpacks = packs_of_half<T>(F, {g.raw_data(), x.raw_data(), dx.raw_data()});
    const int64_t work = fpacks > 0 ? rows * fpacks : rows * F;
    swiglu_backward_kernel<T><<<grid_for(work, x.device().index), kThreads, 0, s>>>(
        static_cast<const T*>(g.raw_data()), static_cast<const T*>(x.raw_data()), static_cast<T*>(dx.raw_data()), rows,
        F, fpacks);
  });
  ZT_CUDA_CHECK_LAUNCH();
  return dx;
}

}  // namespace zt::ops
