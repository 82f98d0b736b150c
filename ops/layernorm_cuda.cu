// CUDA kernels behind ops/layernorm.h: one warp per row, statistics in f32 (f64 for f64).
#include "ops/cuda_compute.cuh"
#include "ops/layernorm_kernels.h"

namespace zt::ops {

namespace {

using namespace gpu;

constexpr int kWarpsPerBlock = 8;

// A product rounded on its own (never fused into a following add): d - a is then exactly 0
// when a holds the same rounded product, as on the CPU (C = 1 rows).
template <class A>
__device__ __forceinline__ A mul_rn(A x, A y) {
  if constexpr (std::is_same_v<A, double>) return __dmul_rn(x, y);
  else return __fmul_rn(x, y);
}

template <class A>
__device__ __forceinline__ A rsqrt_of(A v) {
  if constexpr (std::is_same_v<A, double>) return 1.0 / sqrt(v);
  else return 1.0f / sqrtf(v);
}

// Two passes over the row (mean, then centred variance: no cancellation), then the output;
// a row of 768 bf16 is 1.5 KB and stays in L1 between passes.
template <class T>
__global__ void layernorm_forward_kernel(const T* x, const T* gamma, const T* beta, T* y, acc_t<T>* mean,
                                         acc_t<T>* rstd, int64_t rows, int64_t C, acc_t<T> eps) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * C;
  A s = 0;
  for (int64_t j = lane; j < C; j += 32) s += load<A>(xr, j);
  const A m = warp_sum(s) / A(C);
  A v = 0;
  for (int64_t j = lane; j < C; j += 32) {
    const A d = load<A>(xr, j) - m;
    v += d * d;
  }
  const A inv = rsqrt_of(warp_sum(v) / A(C) + eps);
  T* yr = y + row * C;
  for (int64_t j = lane; j < C; j += 32)
    store(yr, j, (load<A>(xr, j) - m) * inv * load<A>(gamma, j) + load<A>(beta, j));
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = inv;
  }
}

// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = grad * gamma.
template <class T>
__global__ void layernorm_backward_dx_kernel(const T* g, const T* x, const T* gamma, const acc_t<T>* mean,
                                             const acc_t<T>* rstd, T* dx, int64_t rows, int64_t C) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* gr = g + row * C;
  const T* xr = x + row * C;
  const A m = mean[row], s = rstd[row];
  A sum_d = 0, sum_dx = 0;
  for (int64_t j = lane; j < C; j += 32) {
    const A d = mul_rn(load<A>(gr, j), load<A>(gamma, j));
    sum_d += d;
    sum_dx += d * (load<A>(xr, j) - m) * s;
  }
  const A a = warp_sum(sum_d) / A(C), b = warp_sum(sum_dx) / A(C);
  T* dr = dx + row * C;
  for (int64_t j = lane; j < C; j += 32) {
    const A xhat = (load<A>(xr, j) - m) * s;
    store(dr, j, s * (mul_rn(load<A>(gr, j), load<A>(gamma, j)) - a - mul_rn(xhat, b)));
  }
}

template <class T, class A>
struct GradTimesXhat {
  const T *g, *x;
  const A *mean, *rstd;
  int64_t C;
  __device__ A operator()(int64_t r, int64_t j) const {
    return load<A>(g, r * C + j) * (load<A>(x, r * C + j) - mean[r]) * rstd[r];
  }
};

template <class T, class A>
struct GradElement {
  const T* g;
  int64_t C;
  __device__ A operator()(int64_t r, int64_t j) const { return load<A>(g, r * C + j); }
};

}  // namespace

Tensor layernorm_forward_cuda(const Tensor& x_in, const Tensor& gamma_in, const Tensor& beta_in, double eps,
                              Tensor& mean, Tensor& rstd) {
  const Tensor x = x_in.contiguous(), gamma = gamma_in.contiguous(), beta = beta_in.contiguous();
  OpRange range("layernorm");
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  mean = Tensor::empty({rows}, acc_dtype(x.dtype()), x.device());
  rstd = Tensor::empty({rows}, acc_dtype(x.dtype()), x.device());
  if (rows == 0) return y;
  cudaStream_t s = stream_for(x);
  const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  dispatch_device_float(x.dtype(), "layernorm", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    layernorm_forward_kernel<T><<<blocks, kWarpsPerBlock * 32, 0, s>>>(
        static_cast<const T*>(x.raw_data()), static_cast<const T*>(gamma.raw_data()),
        static_cast<const T*>(beta.raw_data()), static_cast<T*>(y.raw_data()), static_cast<A*>(mean.raw_data()),
        static_cast<A*>(rstd.raw_data()), rows, C, static_cast<A>(eps));
  });
  ZT_CUDA_CHECK_LAUNCH();
  return y;
}

void layernorm_backward_cuda(const Tensor& grad_in, const Tensor& x_in, const Tensor& gamma_in, const Tensor& mean,
                             const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta) {
  const Tensor g = grad_in.contiguous(), x = x_in.contiguous(), gamma = gamma_in.contiguous();
  OpRange range("layernorm");
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  const int dev = x.device().index;
  cudaStream_t s = stream_for(x);
  dispatch_device_float(x.dtype(), "layernorm", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const T* pg = static_cast<const T*>(g.raw_data());
    const T* px = static_cast<const T*>(x.raw_data());
    const A* pm = static_cast<const A*>(mean.raw_data());
    const A* ps = static_cast<const A*>(rstd.raw_data());
    if (dx) {
      *dx = Tensor::empty(x.shape(), x.dtype(), x.device());
      if (rows > 0) {
        const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
        layernorm_backward_dx_kernel<T><<<blocks, kWarpsPerBlock * 32, 0, s>>>(
            pg, px, static_cast<const T*>(gamma.raw_data()), pm, ps, static_cast<T*>(dx->raw_data()), rows, C);
        ZT_CUDA_CHECK_LAUNCH();
      }
    }
    if (dgamma) {
      *dgamma = Tensor::empty({C}, gamma_in.dtype(), x.device());
      column_sum<T, A>(dev, rows, C, static_cast<T*>(dgamma->raw_data()), 1, GradTimesXhat<T, A>{pg, px, pm, ps, C});
    }
    if (dbeta) {
      *dbeta = Tensor::empty({C}, gamma_in.dtype(), x.device());
      column_sum<T, A>(dev, rows, C, static_cast<T*>(dbeta->raw_data()), 1, GradElement<T, A>{pg, C});
    }
  });
}

}  // namespace zt::ops
