#pragma once
// What the row-normalisation CUDA kernels (ops/layernorm_cuda.cu, ops/rmsnorm_cuda.cu) share
// (internal; included by those .cu files only): rounding helpers, the packed row layout (one
// warp per row, the row held in registers as 16-byte packs), and the block-level step of
// their parameter gradients: each block sums its warps' per-column partials in shared memory
// and writes one partial row, which gpu::column_sum then adds in a fixed order
// (deterministic, no atomics).
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

}  // namespace zt::ops::gpu
