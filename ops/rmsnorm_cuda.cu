// CUDA kernels behind ops/rmsnorm.h: one warp per row, statistics in f32 (f64 for f64); the
// kernels of ops/layernorm_cuda.cu without the mean and the bias (shared parts: norm_cuda.cuh).
#include "ops/norm_cuda.cuh"
#include "ops/rmsnorm_kernels.h"

namespace zt::ops {

namespace {

using namespace gpu;

constexpr int kWarpsPerBlock = 8;

template <class T>
__global__ void rmsnorm_forward_kernel(const T* x, const T* gamma, T* y, acc_t<T>* rstd, int64_t rows, int64_t C,
                                       acc_t<T> eps) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * C;
  A ss = 0;
  for (int64_t j = lane; j < C; j += 32) {
    const A v = load<A>(xr, j);
    ss += v * v;
  }
  const A inv = rsqrt_of(warp_sum(ss) / A(C) + eps);
  T* yr = y + row * C;
  for (int64_t j = lane; j < C; j += 32) store(yr, j, load<A>(xr, j) * inv * load<A>(gamma, j));
  if (lane == 0) rstd[row] = inv;
}

// dx = rstd (dxhat - xhat mean(dxhat xhat)), dxhat = grad * gamma, xhat = x rstd.
// With `addend` (optional): dx += addend, before the rounding (the engine's gradient folding).
template <class T>
__global__ void rmsnorm_backward_dx_kernel(const T* g, const T* x, const T* gamma, const acc_t<T>* rstd,
                                           const T* addend, T* dx, int64_t rows, int64_t C) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* gr = g + row * C;
  const T* xr = x + row * C;
  const A s = rstd[row];
  A sum_dx = 0;
  for (int64_t j = lane; j < C; j += 32) sum_dx += mul_rn(load<A>(gr, j), load<A>(gamma, j)) * load<A>(xr, j) * s;
  const A b = warp_sum(sum_dx) / A(C);
  T* dr = dx + row * C;
  for (int64_t j = lane; j < C; j += 32) {
    const A xhat = load<A>(xr, j) * s;
    const A v = s * (mul_rn(load<A>(gr, j), load<A>(gamma, j)) - mul_rn(xhat, b));
    store(dr, j, addend ? v + load<A>(addend, row * C + j) : v);
  }
}

// ---- packed kernels (norm_cuda.cuh): a row held in registers as 16-byte packs ----
// Backward also sums g xhat per column over the warp's rows (it grid-strides over rows) in
// registers; each block writes one partial row, summed in a fixed order by column_sum.
constexpr int kBwdWarps = 4, kBwdBlocksPerSm = 3;  // as LayerNorm's (registers)

template <class T, int kPacks>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) rmsnorm_forward_packed_kernel(
    const T* x, const T* gamma, T* y, float* rstd, int64_t rows, int C, float eps) {
  constexpr int N = Pack<T>::kN;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31, packs = C / N;
  if (row >= rows) return;
  Pack<T> xp[kPacks];
  load_row(xp, x + row * C, packs);
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kPacks; ++k)
    if (lane + 32 * k < packs)
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float v = load<float>(xp[k].v, j);
        ss += v * v;
      }
  const float inv = rsqrt_of(warp_sum(ss) / float(C) + eps);
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int p = lane + 32 * k;
    if (p >= packs) continue;
    const Pack<T> gp = load_pack(gamma, p);
    Pack<T> out;
#pragma unroll
    for (int j = 0; j < N; ++j) store(out.v, j, load<float>(xp[k].v, j) * inv * load<float>(gp.v, j));
    store_pack(y + row * C, p, out);
  }
  if (lane == 0) rstd[row] = inv;
}

template <class T, int kPacks>
__global__ void __launch_bounds__(kBwdWarps * 32, kBwdBlocksPerSm) rmsnorm_backward_packed_kernel(
    const T* g, const T* x, const T* gamma, const float* rstd, const T* addend, T* dx, float* partial_dgamma,
    int64_t rows, int C) {
  constexpr int N = Pack<T>::kN;
  __shared__ float red[kBwdWarps][32 * kPacks * N];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int packs = C / N;
  float dgamma[kPacks][N];
#pragma unroll
  for (int k = 0; k < kPacks; ++k)
#pragma unroll
    for (int j = 0; j < N; ++j) dgamma[k][j] = 0.f;
  for (int64_t row = blockIdx.x * int64_t{kBwdWarps} + warp; row < rows; row += int64_t{gridDim.x} * kBwdWarps) {
    Pack<T> gp[kPacks], xp[kPacks], wp[kPacks];
    load_row(gp, g + row * C, packs);
    load_row(xp, x + row * C, packs);
    load_row(wp, gamma, packs);  // L1-resident after the first row
    const float s = rstd[row];
    float sum_dx = 0.f;
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      if (lane + 32 * k >= packs) continue;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float gv = load<float>(gp[k].v, j), xhat = load<float>(xp[k].v, j) * s;
        sum_dx += __fmul_rn(gv, load<float>(wp[k].v, j)) * xhat;
        dgamma[k][j] += gv * xhat;
      }
    }
    const float b = warp_sum(sum_dx) / float(C);
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int p = lane + 32 * k;
      if (p >= packs) continue;
      Pack<T> out, ap{};
      if (addend) ap = load_pack(addend + row * C, p);  // the folded gradient: read here, no extra pass
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float xhat = load<float>(xp[k].v, j) * s;
        const float v = s * (__fmul_rn(load<float>(gp[k].v, j), load<float>(wp[k].v, j)) - __fmul_rn(xhat, b));
        store(out.v, j, addend ? v + load<float>(ap.v, j) : v);
      }
      store_pack(dx + row * C, p, out);
    }
  }
  write_block_column_partials<kBwdWarps>(dgamma, red, partial_dgamma + int64_t{blockIdx.x} * C, C);
}

// Element (r, j) of a [rows, C] f32 matrix (the blocks' partial rows).
struct PartialRows {
  const float* p;
  int64_t C;
  __device__ float operator()(int64_t r, int64_t j) const { return p[r * C + j]; }
};

template <class T, class A>
struct GradTimesXhat {
  const T *g, *x;
  const A* rstd;
  int64_t C;
  __device__ A operator()(int64_t r, int64_t j) const {
    return load<A>(g, r * C + j) * load<A>(x, r * C + j) * rstd[r];
  }
};

}  // namespace

Tensor rmsnorm_forward_cuda(const Tensor& x_in, const Tensor& gamma_in, double eps, Tensor& rstd) {
  const Tensor x = x_in.contiguous(), gamma = gamma_in.contiguous();
  OpRange range("rmsnorm");
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  rstd = Tensor::empty({rows}, acc_dtype(x.dtype()), x.device());
  if (rows == 0) return y;
  cudaStream_t s = stream_for(x);
  const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const int packs = packs_per_lane(x.dtype(), C, {x.raw_data(), gamma.raw_data(), y.raw_data()});
  if (packs > 0) {
    dispatch_packed(x.dtype(), packs, [&](auto tag, auto kp) {
      using T = decltype(tag);
      rmsnorm_forward_packed_kernel<T, decltype(kp)::value><<<blocks, kWarpsPerBlock * 32, 0, s>>>(
          static_cast<const T*>(x.raw_data()), static_cast<const T*>(gamma.raw_data()), static_cast<T*>(y.raw_data()),
          static_cast<float*>(rstd.raw_data()), rows, static_cast<int>(C), static_cast<float>(eps));
    });
    ZT_CUDA_CHECK_LAUNCH();
    return y;
  }
  dispatch_device_float(x.dtype(), "rmsnorm", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    rmsnorm_forward_kernel<T><<<blocks, kWarpsPerBlock * 32, 0, s>>>(
        static_cast<const T*>(x.raw_data()), static_cast<const T*>(gamma.raw_data()), static_cast<T*>(y.raw_data()),
        static_cast<A*>(rstd.raw_data()), rows, C, static_cast<A>(eps));
  });
  ZT_CUDA_CHECK_LAUNCH();
  return y;
}

void rmsnorm_backward_cuda(const Tensor& grad_in, const Tensor& x_in, const Tensor& gamma_in, const Tensor& rstd,
                           Tensor* dx, Tensor* dgamma, const Tensor* dx_addend) {
  const Tensor g = grad_in.contiguous(), x = x_in.contiguous(), gamma = gamma_in.contiguous();
  const Tensor addend = dx && dx_addend ? dx_addend->contiguous() : Tensor();
  ZT_CHECK(!addend.defined() || (addend.dtype() == x.dtype() && addend.numel() == x.numel()),
           "rmsnorm backward: the gradient to add must be x's dtype and size");
  const void* padd = addend.defined() ? addend.raw_data() : nullptr;
  OpRange range("rmsnorm");
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  const int dev = x.device().index;
  cudaStream_t s = stream_for(x);
  // The packed kernel when both gradients are wanted (the model's case).
  const int packs =
      dx && dgamma && rows > 0 ? packs_per_lane(x.dtype(), C, {g.raw_data(), x.raw_data(), gamma.raw_data(), padd}) : 0;
  if (packs > 0) {
    const int64_t blocks = std::min<int64_t>(int64_t{cuda::multiprocessor_count(dev)} * kBwdBlocksPerSm,
                                             (rows + kBwdWarps - 1) / kBwdWarps);
    Tensor partial = Tensor::empty({blocks, C}, DType::f32, x.device());
    float* pp = static_cast<float*>(partial.raw_data());
    *dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    *dgamma = Tensor::empty({C}, gamma_in.dtype(), x.device());
    dispatch_packed(x.dtype(), packs, [&](auto tag, auto kp) {
      using T = decltype(tag);
      rmsnorm_backward_packed_kernel<T, decltype(kp)::value><<<static_cast<unsigned>(blocks), kBwdWarps * 32, 0, s>>>(
          static_cast<const T*>(g.raw_data()), static_cast<const T*>(x.raw_data()),
          static_cast<const T*>(gamma.raw_data()), static_cast<const float*>(rstd.raw_data()),
          static_cast<const T*>(padd), static_cast<T*>(dx->raw_data()), pp, rows, static_cast<int>(C));
      ZT_CUDA_CHECK_LAUNCH();
      column_sum<T, float>(dev, blocks, C, static_cast<T*>(dgamma->raw_data()), 1, PartialRows{pp, C});
    });
    return;
  }
  dispatch_device_float(x.dtype(), "rmsnorm", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const T* pg = static_cast<const T*>(g.raw_data());
    const T* px = static_cast<const T*>(x.raw_data());
    const A* ps = static_cast<const A*>(rstd.raw_data());
    if (dx) {
      *dx = Tensor::empty(x.shape(), x.dtype(), x.device());
      if (rows > 0) {
        const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
        rmsnorm_backward_dx_kernel<T><<<blocks, kWarpsPerBlock * 32, 0, s>>>(
            pg, px, static_cast<const T*>(gamma.raw_data()), ps, static_cast<const T*>(padd),
            static_cast<T*>(dx->raw_data()), rows, C);
        ZT_CUDA_CHECK_LAUNCH();
      }
    }
    if (dgamma) {
      *dgamma = Tensor::empty({C}, gamma_in.dtype(), x.device());
      column_sum<T, A>(dev, rows, C, static_cast<T*>(dgamma->raw_data()), 1, GradTimesXhat<T, A>{pg, px, ps, C});
    }
  });
}

}  // namespace zt::ops
