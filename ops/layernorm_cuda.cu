// CUDA kernels behind ops/layernorm.h: one warp per row, statistics in f32 (f64 for f64).
#include "ops/layernorm_kernels.h"
#include "ops/norm_cuda.cuh"

namespace zt::ops {

namespace {

using namespace gpu;

constexpr int kWarpsPerBlock = 8;

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
// With `addend` (optional): dx += addend, before the rounding (the engine's gradient folding).
template <class T>
__global__ void layernorm_backward_dx_kernel(const T* g, const T* x, const T* gamma, const acc_t<T>* mean,
                                             const acc_t<T>* rstd, const T* addend, T* dx, int64_t rows, int64_t C) {
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
    const A v = s * (mul_rn(load<A>(gr, j), load<A>(gamma, j)) - a - mul_rn(xhat, b));
    store(dr, j, addend ? v + load<A>(addend, row * C + j) : v);
  }
}

// ---- packed kernels: a row held in registers as 16-byte packs ----
// One warp per row; lane l holds packs l, l + 32, ..., (kPacks of them; C = 768 bf16 is 96
// packs, 3 per lane), so each element is read once from memory with 16-byte accesses.
// Backward also sums g xhat and g per column over the warp's rows (it grid-strides over
// rows) in registers; the block adds its warps' sums in shared memory and writes one
// partial row per block, summed in a fixed order by column_sum (deterministic).
// Reads g and x once, writes dx once: ~3 bytes moved per element instead of ~7.
// Backward: 4 warps a block, 3 blocks a multiprocessor (the column sums take ~170 registers).
constexpr int kBwdWarps = 4, kBwdBlocksPerSm = 3;

template <class T, int kPacks>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) layernorm_forward_packed_kernel(
    const T* x, const T* gamma, const T* beta, T* y, float* mean, float* rstd, int64_t rows, int C, float eps) {
  constexpr int N = Pack<T>::kN;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31, packs = C / N;
  if (row >= rows) return;
  Pack<T> xp[kPacks];
  load_row(xp, x + row * C, packs);
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < kPacks; ++k)
    if (lane + 32 * k < packs)
#pragma unroll
      for (int j = 0; j < N; ++j) sum += load<float>(xp[k].v, j);
  const float m = warp_sum(sum) / float(C);
  float var = 0.f;
#pragma unroll
  for (int k = 0; k < kPacks; ++k)
    if (lane + 32 * k < packs)
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float d = load<float>(xp[k].v, j) - m;
        var += d * d;
      }
  const float inv = rsqrt_of(warp_sum(var) / float(C) + eps);
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int p = lane + 32 * k;
    if (p >= packs) continue;
    const Pack<T> gp = load_pack(gamma, p), bp = load_pack(beta, p);
    Pack<T> out;
#pragma unroll
    for (int j = 0; j < N; ++j)
      store(out.v, j, (load<float>(xp[k].v, j) - m) * inv * load<float>(gp.v, j) + load<float>(bp.v, j));
    store_pack(y + row * C, p, out);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = inv;
  }
}

template <class T, int kPacks>
__global__ void __launch_bounds__(kBwdWarps * 32, kBwdBlocksPerSm) layernorm_backward_packed_kernel(
    const T* g, const T* x, const T* gamma, const float* mean, const float* rstd, const T* addend, T* dx,
    float* partial_dgamma, float* partial_dbeta, int64_t rows, int C) {
  constexpr int N = Pack<T>::kN;
  __shared__ float red[kBwdWarps][32 * kPacks * N];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int packs = C / N;
  float dgamma[kPacks][N], dbeta[kPacks][N];
#pragma unroll
  for (int k = 0; k < kPacks; ++k)
#pragma unroll
    for (int j = 0; j < N; ++j) dgamma[k][j] = dbeta[k][j] = 0.f;
  for (int64_t row = blockIdx.x * int64_t{kBwdWarps} + warp; row < rows;
       row += int64_t{gridDim.x} * kBwdWarps) {
    Pack<T> gp[kPacks], xp[kPacks], wp[kPacks];
    load_row(gp, g + row * C, packs);
    load_row(xp, x + row * C, packs);
    load_row(wp, gamma, packs);  // L1-resident after the first row
    const float m = mean[row], s = rstd[row];
    float sum_d = 0.f, sum_dx = 0.f;
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      if (lane + 32 * k >= packs) continue;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float gv = load<float>(gp[k].v, j), xhat = (load<float>(xp[k].v, j) - m) * s;
        const float d = __fmul_rn(gv, load<float>(wp[k].v, j));
        sum_d += d;
        sum_dx += d * xhat;
        dgamma[k][j] += gv * xhat;
        dbeta[k][j] += gv;
      }
    }
    const float a = warp_sum(sum_d) / float(C), b = warp_sum(sum_dx) / float(C);
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int p = lane + 32 * k;
      if (p >= packs) continue;
      Pack<T> out, ap{};
      if (addend) ap = load_pack(addend + row * C, p);  // the folded gradient: read here, no extra pass
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float xhat = (load<float>(xp[k].v, j) - m) * s;
        const float v = s * (__fmul_rn(load<float>(gp[k].v, j), load<float>(wp[k].v, j)) - a - __fmul_rn(xhat, b));
        store(out.v, j, addend ? v + load<float>(ap.v, j) : v);
      }
      store_pack(dx + row * C, p, out);
    }
  }
  // Block sums of the warps' column partials: dgamma, then dbeta through the same buffer.
  write_block_column_partials<kBwdWarps>(dgamma, red, partial_dgamma + int64_t{blockIdx.x} * C, C);
  write_block_column_partials<kBwdWarps>(dbeta, red, partial_dbeta + int64_t{blockIdx.x} * C, C);
}

// Element (r, j) of the [blocks, 2C] matrix [dgamma partials | dbeta partials], whose halves
// are two [blocks, C] f32 buffers one after the other.
struct PartialPair {
  const float* p;
  int64_t blocks, C;
  __device__ float operator()(int64_t r, int64_t j) const {
    const int64_t half = j >= C;
    return p[(half * blocks + r) * C + (j - half * C)];
  }
};

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
  const int packs = packs_per_lane(x.dtype(), C, {x.raw_data(), gamma.raw_data(), beta.raw_data(), y.raw_data()});
  if (packs > 0) {
    dispatch_packed(x.dtype(), packs, [&](auto tag, auto kp) {
      using T = decltype(tag);
      layernorm_forward_packed_kernel<T, decltype(kp)::value><<<blocks, kWarpsPerBlock * 32, 0, s>>>(
          static_cast<const T*>(x.raw_data()), static_cast<const T*>(gamma.raw_data()),
          static_cast<const T*>(beta.raw_data()), static_cast<T*>(y.raw_data()), static_cast<float*>(mean.raw_data()),
          static_cast<float*>(rstd.raw_data()), rows, static_cast<int>(C), static_cast<float>(eps));
    });
    ZT_CUDA_CHECK_LAUNCH();
    return y;
  }
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
                             const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta, const Tensor* dx_addend) {
  const Tensor g = grad_in.contiguous(), x = x_in.contiguous(), gamma = gamma_in.contiguous();
  const Tensor addend = dx && dx_addend ? dx_addend->contiguous() : Tensor();
  ZT_CHECK(!addend.defined() || (addend.dtype() == x.dtype() && addend.numel() == x.numel()),
           "layernorm backward: the gradient to add must be x's dtype and size");
  const void* padd = addend.defined() ? addend.raw_data() : nullptr;
  OpRange range("layernorm");
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  const int dev = x.device().index;
  cudaStream_t s = stream_for(x);
  // The packed kernel when all three gradients are wanted (the model's case).
  const int packs = dx && dgamma && dbeta && rows > 0
                        ? packs_per_lane(x.dtype(), C, {g.raw_data(), x.raw_data(), gamma.raw_data(), padd})
                        : 0;
  if (packs > 0) {
    const int64_t blocks = std::min<int64_t>(int64_t{cuda::multiprocessor_count(dev)} * kBwdBlocksPerSm,
                                             (rows + kBwdWarps - 1) / kBwdWarps);
    Tensor partial = Tensor::empty({2, blocks, C}, DType::f32, x.device());
    float* pdg = static_cast<float*>(partial.raw_data());
    float* pdb = pdg + blocks * C;
    *dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    // dgamma and dbeta side by side: one column reduction (two launches, not four) sums both.
    Tensor params = Tensor::empty({2, C}, gamma_in.dtype(), x.device());
    *dgamma = params.select(0, 0);
    *dbeta = params.select(0, 1);
    dispatch_packed(x.dtype(), packs, [&](auto tag, auto kp) {
      using T = decltype(tag);
      layernorm_backward_packed_kernel<T, decltype(kp)::value><<<static_cast<unsigned>(blocks), kBwdWarps * 32, 0, s>>>(
          static_cast<const T*>(g.raw_data()), static_cast<const T*>(x.raw_data()),
          static_cast<const T*>(gamma.raw_data()), static_cast<const float*>(mean.raw_data()),
          static_cast<const float*>(rstd.raw_data()), static_cast<const T*>(padd), static_cast<T*>(dx->raw_data()),
          pdg, pdb, rows,
          static_cast<int>(C));
      ZT_CUDA_CHECK_LAUNCH();
      // The blocks' partial rows, summed in a fixed order by the two-stage column reduction
      // (one thread per column over all ~400 rows would be latency-bound: ~35 us a call), over
      // the 2C columns of [dgamma | dbeta].
      column_sum<T, float>(dev, blocks, 2 * C, static_cast<T*>(params.raw_data()), 1, PartialPair{pdg, blocks, C});
    });
    return;
  }
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
            pg, px, static_cast<const T*>(gamma.raw_data()), pm, ps, static_cast<const T*>(padd),
            static_cast<T*>(dx->raw_data()), rows, C);
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
