#pragma once
// The row-normalisation CUDA kernels behind ops/layernorm_cuda.cu and ops/rmsnorm_cuda.cu
// (internal; included by those .cu files only), one template per kernel: kCenter = true is
// LayerNorm (x - mean, + beta), false RMSNorm (no mean, no beta: those pointers are unused).
// One warp per row, statistics in f32 (f64 for f64). The packed kernels hold a row in
// registers as 16-byte packs; their backward sums the parameter gradients per column in
// registers, each block adds its warps' sums in shared memory and writes one partial row, and
// gpu::column_sum adds those rows in a fixed order (deterministic, no atomics).
#include <initializer_list>
#include <type_traits>

#include "ops/cuda_compute.cuh"

namespace zt::ops::gpu {

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

constexpr int kWarpsPerBlock = 8;  // the forward and plain dx kernels: 8 rows a block
// The packed backward: 4 warps a block, 3 blocks a multiprocessor (LayerNorm's column sums take
// ~170 registers).
constexpr int kBwdWarps = 4, kBwdBlocksPerSm = 3;

// Two passes over the row (LayerNorm: the mean, then the centred variance: no cancellation;
// RMSNorm: the mean square), then the output; a row of 768 bf16 is 1.5 KB and stays in L1
// between passes.
template <class T, bool kCenter>
__global__ void norm_forward_kernel(const T* x, const T* gamma, const T* beta, T* y, acc_t<T>* mean, acc_t<T>* rstd,
                                    int64_t rows, int64_t C, acc_t<T> eps) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * C;
  A m = 0;
  if constexpr (kCenter) {
    A s = 0;
    for (int64_t j = lane; j < C; j += 32) s += load<A>(xr, j);
    m = warp_sum(s) / A(C);
  }
  A v = 0;
  for (int64_t j = lane; j < C; j += 32) {
    const A d = kCenter ? load<A>(xr, j) - m : load<A>(xr, j);
    v += d * d;
  }
  const A inv = rsqrt_of(warp_sum(v) / A(C) + eps);
  T* yr = y + row * C;
  for (int64_t j = lane; j < C; j += 32) {
    if constexpr (kCenter) store(yr, j, (load<A>(xr, j) - m) * inv * load<A>(gamma, j) + load<A>(beta, j));
    else store(yr, j, load<A>(xr, j) * inv * load<A>(gamma, j));
  }
  if (lane == 0) {
    if constexpr (kCenter) mean[row] = m;
    rstd[row] = inv;
  }
}

// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = grad * gamma (RMSNorm:
// without the mean(dxhat) term, xhat = x rstd).
// With `addend` (optional): dx += addend, before the rounding (the engine's gradient folding).
template <class T, bool kCenter>
__global__ void norm_backward_dx_kernel(const T* g, const T* x, const T* gamma, const acc_t<T>* mean,
                                        const acc_t<T>* rstd, const T* addend, T* dx, int64_t rows, int64_t C) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* gr = g + row * C;
  const T* xr = x + row * C;
  const A m = kCenter ? mean[row] : A(0), s = rstd[row];
  A sum_d = 0, sum_dx = 0;
  for (int64_t j = lane; j < C; j += 32) {
    const A d = mul_rn(load<A>(gr, j), load<A>(gamma, j));
    if constexpr (kCenter) {
      sum_d += d;
      sum_dx += d * (load<A>(xr, j) - m) * s;
    } else {
      sum_dx += d * load<A>(xr, j) * s;
    }
  }
  const A a = kCenter ? warp_sum(sum_d) / A(C) : A(0), b = warp_sum(sum_dx) / A(C);
  T* dr = dx + row * C;
  for (int64_t j = lane; j < C; j += 32) {
    A v;
    if constexpr (kCenter) {
      const A xhat = (load<A>(xr, j) - m) * s;
      v = s * (mul_rn(load<A>(gr, j), load<A>(gamma, j)) - a - mul_rn(xhat, b));
    } else {
      const A xhat = load<A>(xr, j) * s;
      v = s * (mul_rn(load<A>(gr, j), load<A>(gamma, j)) - mul_rn(xhat, b));
    }
    store(dr, j, addend ? v + load<A>(addend, row * C + j) : v);
  }
}

// ---- packed rows ----
// One warp per row; lane l holds packs l, l + 32, ..., (kPacks of them; C = 768 bf16 is 96
// packs, 3 per lane), so each element is read once from memory with 16-byte accesses.
constexpr int kMaxPacks = 4;  // C <= 32 * 4 * 8 = 1024 for bf16, 512 for f32

template <class T, int kPacks>
__device__ __forceinline__ void load_row(Pack<T> (&r)[kPacks], const T* row, int packs) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int k = 0; k < kPacks; ++k)
    if (lane + 32 * k < packs) r[k] = load_pack(row, lane + 32 * k);
}

// Packs per lane for a row of C elements of dtype t when the packed kernels take it: f32 or
// bf16, whole 16-byte packs, at most kMaxPacks per lane, 16-byte aligned buffers; else 0.
inline int packs_per_lane(DType t, int64_t C, std::initializer_list<const void*> ptrs) {
  if (t != DType::bf16 && t != DType::f32) return 0;
  const int64_t n = 16 / static_cast<int64_t>(dtype_size(t));
  if (C == 0 || C % n != 0 || C / n > 32 * kMaxPacks) return 0;
  for (const void* p : ptrs)
    if (!aligned16(p)) return 0;
  return static_cast<int>((C / n + 31) / 32);
}

// Calls f(T{}, integral_constant<kPacks>) for the packed kernels' dtype and packs per lane.
template <class F>
void dispatch_packed(DType t, int packs, F&& f) {
  auto with_type = [&](auto tag) {
    switch (packs) {
      case 1: return f(tag, std::integral_constant<int, 1>{});
      case 2: return f(tag, std::integral_constant<int, 2>{});
      case 3: return f(tag, std::integral_constant<int, 3>{});
      default: return f(tag, std::integral_constant<int, 4>{});
    }
  };
  if (t == DType::bf16) with_type(__nv_bfloat16{});
  else with_type(float{});
}

// The block's sum of its warps' column partials `acc` (lane l's acc[k][j] belongs to column
// (l + 32 k) N + j), written to dst[0, C): through `red` in shared memory, warps added in a
// fixed order. Every thread of the block must call it; it ends synchronised, so `red` can be
// reused at once.
template <int kWarps, int kPacks, int N>
__device__ __forceinline__ void write_block_column_partials(const float (&acc)[kPacks][N],
                                                            float (&red)[kWarps][32 * kPacks * N], float* dst,
                                                            int C) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < kPacks; ++k)
#pragma unroll
    for (int j = 0; j < N; ++j) red[warp][(lane + 32 * k) * N + j] = acc[k][j];
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float s = 0.f;
    for (int w = 0; w < kWarps; ++w) s += red[w][c];
    dst[c] = s;
  }
  __syncthreads();
}

template <class T, bool kCenter, int kPacks>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) norm_forward_packed_kernel(
    const T* x, const T* gamma, const T* beta, T* y, float* mean, float* rstd, int64_t rows, int C, float eps) {
  constexpr int N = Pack<T>::kN;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31, packs = C / N;
  if (row >= rows) return;
  Pack<T> xp[kPacks];
  load_row(xp, x + row * C, packs);
  float m = 0.f;
  if constexpr (kCenter) {
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < kPacks; ++k)
      if (lane + 32 * k < packs)
#pragma unroll
        for (int j = 0; j < N; ++j) sum += load<float>(xp[k].v, j);
    m = warp_sum(sum) / float(C);
  }
  float var = 0.f;
#pragma unroll
  for (int k = 0; k < kPacks; ++k)
    if (lane + 32 * k < packs)
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float d = kCenter ? load<float>(xp[k].v, j) - m : load<float>(xp[k].v, j);
        var += d * d;
      }
  const float inv = rsqrt_of(warp_sum(var) / float(C) + eps);
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int p = lane + 32 * k;
    if (p >= packs) continue;
    const Pack<T> gp = load_pack(gamma, p);
    Pack<T> out;
    if constexpr (kCenter) {
      const Pack<T> bp = load_pack(beta, p);
#pragma unroll
      for (int j = 0; j < N; ++j)
        store(out.v, j, (load<float>(xp[k].v, j) - m) * inv * load<float>(gp.v, j) + load<float>(bp.v, j));
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) store(out.v, j, load<float>(xp[k].v, j) * inv * load<float>(gp.v, j));
    }
    store_pack(y + row * C, p, out);
  }
  if (lane == 0) {
    if constexpr (kCenter) mean[row] = m;
    rstd[row] = inv;
  }
}

// Reads g and x once, writes dx once (~3 bytes moved per element instead of ~7), and writes
// the block's partial row of dgamma (and for LayerNorm of dbeta) to partial_*[blockIdx.x, C).
template <class T, bool kCenter, int kPacks>
__global__ void __launch_bounds__(kBwdWarps * 32, kBwdBlocksPerSm) norm_backward_packed_kernel(
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
  for (int64_t row = blockIdx.x * int64_t{kBwdWarps} + warp; row < rows; row += int64_t{gridDim.x} * kBwdWarps) {
    Pack<T> gp[kPacks], xp[kPacks], wp[kPacks];
    load_row(gp, g + row * C, packs);
    load_row(xp, x + row * C, packs);
    load_row(wp, gamma, packs);  // L1-resident after the first row
    const float m = kCenter ? mean[row] : 0.f, s = rstd[row];
    float sum_d = 0.f, sum_dx = 0.f;
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      if (lane + 32 * k >= packs) continue;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float gv = load<float>(gp[k].v, j);
        const float xhat = kCenter ? (load<float>(xp[k].v, j) - m) * s : load<float>(xp[k].v, j) * s;
        const float d = __fmul_rn(gv, load<float>(wp[k].v, j));
        if constexpr (kCenter) sum_d += d;
        sum_dx += d * xhat;
        dgamma[k][j] += gv * xhat;
        if constexpr (kCenter) dbeta[k][j] += gv;
      }
    }
    const float a = kCenter ? warp_sum(sum_d) / float(C) : 0.f, b = warp_sum(sum_dx) / float(C);
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int p = lane + 32 * k;
      if (p >= packs) continue;
      Pack<T> out, ap{};
      if (addend) ap = load_pack(addend + row * C, p);  // the folded gradient: read here, no extra pass
#pragma unroll
      for (int j = 0; j < N; ++j) {
        float v;
        if constexpr (kCenter) {
          const float xhat = (load<float>(xp[k].v, j) - m) * s;
          v = s * (__fmul_rn(load<float>(gp[k].v, j), load<float>(wp[k].v, j)) - a - __fmul_rn(xhat, b));
        } else {
          const float xhat = load<float>(xp[k].v, j) * s;
          v = s * (__fmul_rn(load<float>(gp[k].v, j), load<float>(wp[k].v, j)) - __fmul_rn(xhat, b));
        }
        store(out.v, j, addend ? v + load<float>(ap.v, j) : v);
      }
      store_pack(dx + row * C, p, out);
    }
  }
  // Block sums of the warps' column partials: dgamma, then (LayerNorm) dbeta through the same buffer.
  write_block_column_partials<kBwdWarps>(dgamma, red, partial_dgamma + int64_t{blockIdx.x} * C, C);
  if constexpr (kCenter) write_block_column_partials<kBwdWarps>(dbeta, red, partial_dbeta + int64_t{blockIdx.x} * C, C);
}

// Element (r, j) of the [blocks, kHalves C] matrix of the packed backward's partial rows,
// [dgamma partials | dbeta partials] for LayerNorm (two [blocks, C] f32 buffers one after the
// other), the dgamma partials alone for RMSNorm.
struct PartialRows {
  const float* p;
  int64_t blocks, C;
  __device__ float operator()(int64_t r, int64_t j) const {
    const int64_t half = j >= C;
    return p[(half * blocks + r) * C + (j - half * C)];
  }
};

template <class T, class A, bool kCenter>
struct GradTimesXhat {
  const T *g, *x;
  const A *mean, *rstd;
  int64_t C;
  __device__ A operator()(int64_t r, int64_t j) const {
    if constexpr (kCenter) return load<A>(g, r * C + j) * (load<A>(x, r * C + j) - mean[r]) * rstd[r];
    else return load<A>(g, r * C + j) * load<A>(x, r * C + j) * rstd[r];
  }
};

template <class T, class A>
struct GradElement {
  const T* g;
  int64_t C;
  __device__ A operator()(int64_t r, int64_t j) const { return load<A>(g, r * C + j); }
};

// ---- the host side of both ops (ops/layernorm_kernels.h, ops/rmsnorm_kernels.h) ----
// RMSNorm passes an undefined beta and no mean (kCenter = false).

template <bool kCenter>
Tensor norm_forward_cuda(const char* op, const Tensor& x_in, const Tensor& gamma_in, const Tensor& beta_in,
                         double eps, Tensor* mean, Tensor& rstd) {
  const Tensor x = x_in.contiguous(), gamma = gamma_in.contiguous();
  const Tensor beta = kCenter ? beta_in.contiguous() : Tensor();
  const void* pbeta = kCenter ? beta.raw_data() : nullptr;
  OpRange range(op);
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if constexpr (kCenter) *mean = Tensor::empty({rows}, acc_dtype(x.dtype()), x.device());
  rstd = Tensor::empty({rows}, acc_dtype(x.dtype()), x.device());
  if (rows == 0) return y;
  void* pmean = kCenter ? mean->raw_data() : nullptr;
  cudaStream_t s = stream_for(x);
  const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const int packs = packs_per_lane(x.dtype(), C, {x.raw_data(), gamma.raw_data(), pbeta, y.raw_data()});
  if (packs > 0) {
    dispatch_packed(x.dtype(), packs, [&](auto tag, auto kp) {
      using T = decltype(tag);
      norm_forward_packed_kernel<T, kCenter, decltype(kp)::value><<<blocks, kWarpsPerBlock * 32, 0, s>>>(
          static_cast<const T*>(x.raw_data()), static_cast<const T*>(gamma.raw_data()), static_cast<const T*>(pbeta),
          static_cast<T*>(y.raw_data()), static_cast<float*>(pmean), static_cast<float*>(rstd.raw_data()), rows,
          static_cast<int>(C), static_cast<float>(eps));
    });
    ZT_CUDA_CHECK_LAUNCH();
    return y;
  }
  dispatch_device_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    norm_forward_kernel<T, kCenter><<<blocks, kWarpsPerBlock * 32, 0, s>>>(
        static_cast<const T*>(x.raw_data()), static_cast<const T*>(gamma.raw_data()), static_cast<const T*>(pbeta),
        static_cast<T*>(y.raw_data()), static_cast<A*>(pmean), static_cast<A*>(rstd.raw_data()), rows, C,
        static_cast<A>(eps));
  });
  ZT_CUDA_CHECK_LAUNCH();
  return y;
}

// dbeta and mean only for LayerNorm (RMSNorm: nullptr and an undefined tensor).
template <bool kCenter>
void norm_backward_cuda(const char* op, const Tensor& grad_in, const Tensor& x_in, const Tensor& gamma_in,
                        const Tensor& mean, const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta,
                        const Tensor* dx_addend) {
  const Tensor g = grad_in.contiguous(), x = x_in.contiguous(), gamma = gamma_in.contiguous();
  const Tensor addend = dx && dx_addend ? dx_addend->contiguous() : Tensor();
  ZT_CHECK(!addend.defined() || (addend.dtype() == x.dtype() && addend.numel() == x.numel()), op,
           " backward: the gradient to add must be x's dtype and size");
  const void* padd = addend.defined() ? addend.raw_data() : nullptr;
  const void* pmean = kCenter ? mean.raw_data() : nullptr;
  OpRange range(op);
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  const int dev = x.device().index;
  cudaStream_t s = stream_for(x);
  // The packed kernel when every gradient is wanted (the model's case).
  const int packs = dx && dgamma && (dbeta || !kCenter) && rows > 0
                        ? packs_per_lane(x.dtype(), C, {g.raw_data(), x.raw_data(), gamma.raw_data(), padd})
                        : 0;
  if (packs > 0) {
    constexpr int64_t kHalves = kCenter ? 2 : 1;  // [dgamma | dbeta] or dgamma
    const int64_t blocks = std::min<int64_t>(int64_t{cuda::multiprocessor_count(dev)} * kBwdBlocksPerSm,
                                             (rows + kBwdWarps - 1) / kBwdWarps);
    Tensor partial = Tensor::empty({kHalves, blocks, C}, DType::f32, x.device());
    float* pdg = static_cast<float*>(partial.raw_data());
    float* pdb = kCenter ? pdg + blocks * C : nullptr;
    *dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    // dgamma and dbeta side by side: one column reduction (two launches, not four) sums both.
    Tensor params = Tensor::empty({kHalves, C}, gamma_in.dtype(), x.device());
    *dgamma = params.select(0, 0);
    if constexpr (kCenter) *dbeta = params.select(0, 1);
    dispatch_packed(x.dtype(), packs, [&](auto tag, auto kp) {
      using T = decltype(tag);
      norm_backward_packed_kernel<T, kCenter, decltype(kp)::value>
          <<<static_cast<unsigned>(blocks), kBwdWarps * 32, 0, s>>>(
              static_cast<const T*>(g.raw_data()), static_cast<const T*>(x.raw_data()),
              static_cast<const T*>(gamma.raw_data()), static_cast<const float*>(pmean),
              static_cast<const float*>(rstd.raw_data()), static_cast<const T*>(padd), static_cast<T*>(dx->raw_data()),
              pdg, pdb, rows, static_cast<int>(C));
      ZT_CUDA_CHECK_LAUNCH();
      // The blocks' partial rows, summed in a fixed order by the two-stage column reduction
      // (one thread per column over all ~400 rows would be latency-bound: ~35 us a call), over
      // the kHalves C columns of [dgamma | dbeta].
      column_sum<T, float>(dev, blocks, kHalves * C, static_cast<T*>(params.raw_data()), 1,
                           PartialRows{pdg, blocks, C});
    });
    return;
  }
  dispatch_device_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const T* pg = static_cast<const T*>(g.raw_data());
    const T* px = static_cast<const T*>(x.raw_data());
    const A* pm = static_cast<const A*>(pmean);
    const A* ps = static_cast<const A*>(rstd.raw_data());
    if (dx) {
      *dx = Tensor::empty(x.shape(), x.dtype(), x.device());
      if (rows > 0) {
        const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
        norm_backward_dx_kernel<T, kCenter><<<blocks, kWarpsPerBlock * 32, 0, s>>>(
            pg, px, static_cast<const T*>(gamma.raw_data()), pm, ps, static_cast<const T*>(padd),
            static_cast<T*>(dx->raw_data()), rows, C);
        ZT_CUDA_CHECK_LAUNCH();
      }
    }
    if (dgamma) {
      *dgamma = Tensor::empty({C}, gamma_in.dtype(), x.device());
      column_sum<T, A>(dev, rows, C, static_cast<T*>(dgamma->raw_data()), 1,
                       GradTimesXhat<T, A, kCenter>{pg, px, pm, ps, C});
    }
    if (kCenter && dbeta) {
      *dbeta = Tensor::empty({C}, gamma_in.dtype(), x.device());
      column_sum<T, A>(dev, rows, C, static_cast<T*>(dbeta->raw_data()), 1, GradElement<T, A>{pg, C});
    }
  });
}

}  // namespace zt::ops::gpu
