// Fused causal attention for bf16 on CUDA (FlashAttention-2 style, our own kernels), used by
// ops/attention.cpp when the operands are bf16 and the head size is 32 or 64, and k and v have
// q's head count (grouped-query heads, Hkv < H, are not supported: those calls go to cuDNN or
// the composite).
//
// Forward: one CTA of 4 warps per (query block of 64 rows, head, batch); each warp owns 16
// query rows. Key/value blocks of 64 rows stream through shared memory (cp.async, two
// stages); S = Q K^T and O += P V run on the tensor cores (mma.sync m16n8k16, bf16 in, f32
// accumulate) with an online softmax in registers, so the T x T scores never reach device
// memory. Only the diagonal block is masked; blocks above it are never visited. Saves the
// row log-sum-exp (natural log, f32) for backward.
//
// Backward: one CTA per (key block of 64 rows, head, batch); each warp owns 16 keys and walks
// the query blocks at and below the diagonal. With P recomputed from the saved lse:
//   S^T = K Q^T, P^T = exp(S^T s - lse), dP^T = V dO^T, dS^T = P^T (dP^T - delta),
//   dV += P^T dO, dK += s dS^T Q (registers),  dQ += s dS K (f32 atomics into a scratch
//   buffer, rounded to bf16 by a last small kernel),
// with delta = rowsum(dO o O) from a first small kernel and s = 1/sqrt(D).
//
// Memory traffic per head: forward reads Q once and K, V once per query block (T/64 times,
// from L2 mostly), writes O and lse; backward likewise plus dQ's f32 atomics. FLOPs: 4 T^2 D
// forward and 10 T^2 D backward per head, halved by causality.
//
// Shared-memory tiles are rows of D bf16 (D/8 chunks of 16 bytes); the chunk index is XORed
// with the row so that the 8 rows an ldmatrix reads at one column fall in 8 different banks.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdlib>

#include "ops/attention_kernels.h"
#include "ops/cuda_compute.cuh"

namespace zt::ops {

namespace {

using namespace gpu;

constexpr int kBlockRows = 64;  // query rows per CTA (forward), key rows per CTA (backward)
constexpr int kWarps = 4;
constexpr int kThreadsPerCta = kWarps * 32;
// Register caps (65536 registers per SM): 4 forward CTAs (128 registers a thread) and 3
// backward CTAs (168) resident per multiprocessor, with no spills (check -Xptxas -v).
constexpr int kForwardCtasPerSm = 4, kBackwardCtasPerSm = 3;

// ---- small PTX wrappers ----

// 16-byte async copy global -> shared; src_bytes 0 zero-fills (rows past the sequence end).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d += a b for one m16n8k16 tile: a row-major 16x16 (4 regs), b "col" 16x8 (2 regs), d 16x8 f32.
// Accumulator layout (lane = 4 g + t): d[0], d[1] at (row g, cols 2t, 2t+1); d[2], d[3] at row g+8.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// ---- swizzled [rows][kCols] bf16 tiles ----

// Element offset of (row r, column c) in a tile whose rows hold kCols bf16 (kCols/8 chunks).
template <int kCols>
__device__ __forceinline__ int swz(int r, int c) {
  constexpr int kChunks = kCols / 8;
  static_assert(kChunks == 4 || kChunks == 8, "tile rows of 32 or 64 bf16");
  const int x = kChunks == 8 ? (r & 7) : ((r >> 1) & 3);
  return r * kCols + (((c >> 3) ^ x) << 3) + (c & 7);
}

// Copies rows [row0, row0 + 64) of a [T, kD] view (row stride `ld` elements) into a tile,
// zero-filling rows >= T. All threads of the CTA take part.
template <int kD>
__device__ __forceinline__ void load_tile_async(__nv_bfloat16* tile, const __nv_bfloat16* src, int64_t ld, int row0,
                                                int T) {
  constexpr int kChunks = kD / 8;
  for (int i = threadIdx.x; i < kBlockRows * kChunks; i += kThreadsPerCta) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    const int row = row0 + r;
    const bool valid = row < T;
    const __nv_bfloat16* p = src + (valid ? static_cast<int64_t>(row) * ld + c : 0);
    cp_async_16(tile + swz<kD>(r, c), p, valid);
  }
}

// A fragment (16 x 16, rows m0.., columns k0..) of a row-major tile.
template <int kCols>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const __nv_bfloat16* tile, int m0, int k0) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4(a, tile + swz<kCols>(m0 + (lane & 15), k0 + (lane >> 4) * 8));
}
// A fragment (16 x 16) of the transpose of a tile: A[m][k] = tile[k][m], rows m0.., columns k0..
template <int kCols>
__device__ __forceinline__ void load_a_trans(uint32_t (&a)[4], const __nv_bfloat16* tile, int m0, int k0) {
  const int lane = threadIdx.x & 31, mi = lane >> 3;
  ldmatrix_x4_trans(a, tile + swz<kCols>(k0 + (mi >> 1) * 8 + (lane & 7), m0 + (mi & 1) * 8));
}
// B fragments of two n-tiles (n0.., n0+8..) for k0..k0+15 where B[k][n] = tile[n][k]
// (a tile holding B's columns as rows, e.g. K for S = Q K^T): b[0], b[1] n-tile n0; b[2], b[3] n0+8.
template <int kCols>
__device__ __forceinline__ void load_b_rows(uint32_t (&b)[4], const __nv_bfloat16* tile, int n0, int k0) {
  const int lane = threadIdx.x & 31, mi = lane >> 3;
  ldmatrix_x4(b, tile + swz<kCols>(n0 + (mi >> 1) * 8 + (lane & 7), k0 + (mi & 1) * 8));
}
// B fragments of two n-tiles where B[k][n] = tile[k][n] (row-major B, e.g. V for O = P V).
template <int kCols>
__device__ __forceinline__ void load_b_cols(uint32_t (&b)[4], const __nv_bfloat16* tile, int n0, int k0) {
  const int lane = threadIdx.x & 31, mi = lane >> 3;
  ldmatrix_x4_trans(b, tile + swz<kCols>(k0 + (mi & 1) * 8 + (lane & 7), n0 + (mi >> 1) * 8));
}

// A fragments for the k-step kk (columns 16 kk .. 16 kk + 15) built from f32 accumulators
// acc[n-tile][4] of a 16 x 64 product: the accumulator layout of two adjacent n-tiles is the
// A-operand layout of one k-step.
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

struct Views {
  const __nv_bfloat16 *q, *k, *v;
  AttentionLayout in;  // q, k, v
  int T, H;
};

// ------------------------------------------------------------------ forward

template <int kD>
__global__ void __launch_bounds__(kThreadsPerCta, kForwardCtasPerSm) flash_forward_kernel(Views x, __nv_bfloat16* out,
                                                                       AttentionLayout out_layout, float* lse,
                                                                       float scale_log2) {
  constexpr int kDT = kD / 8;  // n-tiles of the output
  __shared__ __align__(128) __nv_bfloat16 q_tile[kBlockRows * kD];
  __shared__ __align__(128) __nv_bfloat16 k_tile[2][kBlockRows * kD];
  __shared__ __align__(128) __nv_bfloat16 v_tile[2][kBlockRows * kD];

  const int qb = gridDim.x - 1 - blockIdx.x;  // longest rows first
  const int h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t in_off = b * x.in.batch + h * x.in.head;
  const __nv_bfloat16 *q = x.q + in_off, *k = x.k + in_off, *v = x.v + in_off;

  load_tile_async<kD>(q_tile, q, x.in.row, qb * kBlockRows, x.T);
  load_tile_async<kD>(k_tile[0], k, x.in.row, 0, x.T);
  load_tile_async<kD>(v_tile[0], v, x.in.row, 0, x.T);
  cp_async_commit();

  uint32_t qa[kD / 16][4];
  float o[kDT][4];
#pragma unroll
  for (int i = 0; i < kDT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};  // rows g, g + 8 (log2 domain)
  const int row_lo = qb * kBlockRows + warp * 16 + g;              // this thread's first query row

  for (int j = 0; j <= qb; ++j) {
    const int buf = j & 1;
    if (j < qb) {
      load_tile_async<kD>(k_tile[buf ^ 1], k, x.in.row, (j + 1) * kBlockRows, x.T);
      load_tile_async<kD>(v_tile[buf ^ 1], v, x.in.row, (j + 1) * kBlockRows, x.T);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) load_a<kD>(qa[kk], q_tile, warp * 16, kk * 16);
    }

    // S = Q K^T for this warp's 16 rows x 64 keys.
    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk)
#pragma unroll
      for (int n = 0; n < 8; n += 2) {
        uint32_t kb[4];
        load_b_rows<kD>(kb, k_tile[buf], n * 8, kk * 16);
        mma_bf16(s[n], qa[kk], kb[0], kb[1]);
        mma_bf16(s[n + 1], qa[kk], kb[2], kb[3]);
      }

    // Online softmax (base 2), masking keys past the row on the diagonal block.
    float m_blk[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float val = s[n][e] * scale_log2;
        if (j == qb) {
          const int key = j * kBlockRows + n * 8 + 2 * t + (e & 1);
          const int row = row_lo + (e >> 1) * 8;
          if (key > row) val = -INFINITY;
        }
        s[n][e] = val;
        m_blk[e >> 1] = fmaxf(m_blk[e >> 1], val);
      }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      m_blk[r] = fmaxf(m_blk[r], __shfl_xor_sync(0xffffffffu, m_blk[r], 1));
      m_blk[r] = fmaxf(m_blk[r], __shfl_xor_sync(0xffffffffu, m_blk[r], 2));
      const float m_new = fmaxf(m_run[r], m_blk[r]);
      alpha[r] = exp2f(m_run[r] - m_new);  // 0 on the first block (m_run = -inf)
      m_run[r] = m_new;
      l_run[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < kDT; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[n][e] - m_run[e >> 1]);
        s[n][e] = p;
        l_run[e >> 1] += p;
      }

    // O += P V.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t pa[4];
      acc_to_a(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int n = 0; n < kDT; n += 2) {
        uint32_t vb[4];
        load_b_cols<kD>(vb, v_tile[buf], n * 8, kk * 16);
        mma_bf16(o[n], pa, vb[0], vb[1]);
        mma_bf16(o[n + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads();  // the next iteration loads block j + 2 into this buffer
  }

  // Finish: rows sums across the quad, normalise, store O (bf16 pairs) and lse.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
  const int64_t out_off = b * out_layout.batch + h * out_layout.head;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_lo + r * 8;
    if (row >= x.T) continue;
    const float inv = 1.f / l_run[r];
    __nv_bfloat16* dst = out + out_off + static_cast<int64_t>(row) * out_layout.row;
#pragma unroll
    for (int n = 0; n < kDT; ++n)
      *reinterpret_cast<uint32_t*>(dst + n * 8 + 2 * t) = pack_bf16(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    if (t == 0) lse[(static_cast<int64_t>(b) * x.H + h) * x.T + row] = (m_run[r] + log2f(l_run[r])) / kLog2e;
  }
}

// ------------------------------------------------------------------ backward

// delta[b, h, t] = sum_d dO[b, h, t, d] O[b, h, t, d]; one warp per row.
template <int kD>
__global__ void row_delta_kernel(const __nv_bfloat16* dout, const __nv_bfloat16* out, AttentionLayout layout,
                                 float* delta, int H, int T, int64_t rows) {
  const int64_t r = blockIdx.x * int64_t{kWarps} + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const int tt = static_cast<int>(r % T), h = static_cast<int>((r / T) % H);
  const int64_t b = r / (int64_t{T} * H);
  const int64_t off = b * layout.batch + h * layout.head + tt * layout.row;
  float acc = 0.f;
  for (int d = lane; d < kD; d += 32) acc += __bfloat162float(dout[off + d]) * __bfloat162float(out[off + d]);
  acc = warp_sum(acc);
  if (lane == 0) delta[r] = acc;
}

template <int kD>
struct BackwardSmem {
  __nv_bfloat16 k[kBlockRows * kD];
  __nv_bfloat16 v[kBlockRows * kD];
  __nv_bfloat16 q[2][kBlockRows * kD];
  __nv_bfloat16 dout[2][kBlockRows * kD];
  __nv_bfloat16 ds[kBlockRows * kBlockRows];  // dS^T: [key][query]
  float lse2[2][kBlockRows];                  // lse in log2 units; +inf past the sequence end
  float delta[2][kBlockRows];
};

template <int kD>
__device__ __forceinline__ void load_row_stats(float* lse2, float* delta, const float* lse_src,
                                               const float* delta_src, int row0, int T) {
  for (int i = threadIdx.x; i < kBlockRows; i += kThreadsPerCta) {
    const int row = row0 + i;
    lse2[i] = row < T ? lse_src[row] * kLog2e : INFINITY;
    delta[i] = row < T ? delta_src[row] : 0.f;
  }
}

// Adds a warp's 16 x kD block of dQ (mma accumulator layout, rows row0 + g and row0 + g + 8)
// into the f32 accumulator with 16-byte vector reductions: quad partners t and t ^ 1 swap
// halves so that the even lane holds 4 consecutive columns of row g, the odd lane of row g + 8.
template <int kD>
__device__ __forceinline__ void add_dq(float* dq_acc, const AttentionLayout& l, int64_t off, int row0, int T,
                                       const float (&dq)[kD / 8][4], float scale) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const bool odd = t & 1;
  const int row = row0 + g + (odd ? 8 : 0);
  float* dst = dq_acc + off + static_cast<int64_t>(row) * l.row + 2 * (t & ~1);
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
    // Even lanes send their row-(g+8) pair, odd lanes their row-g pair.
    const float s0 = __shfl_xor_sync(0xffffffffu, odd ? dq[n][0] : dq[n][2], 1);
    const float s1 = __shfl_xor_sync(0xffffffffu, odd ? dq[n][1] : dq[n][3], 1);
    const float4 v = odd ? make_float4(s0, s1, dq[n][2], dq[n][3]) : make_float4(dq[n][0], dq[n][1], s0, s1);
    if (row < T)
      atomicAdd(reinterpret_cast<float4*>(dst + n * 8),
                make_float4(v.x * scale, v.y * scale, v.z * scale, v.w * scale));
  }
}

// Each 64-query block is taken in four chunks of 16 queries: P and dS are elementwise, so
// S^T, dP^T, P^T, dS^T and their dV / dK products run chunk by chunk, which keeps 16 x 16
// score tiles live instead of 16 x 64 and lets K's and V's A fragments stay in registers
// for the whole kernel. dQ needs the whole 64-key dS^T tile: it goes through shared memory.
template <int kD>
__global__ void __launch_bounds__(kThreadsPerCta, kBackwardCtasPerSm) flash_backward_kernel(
    Views x, const __nv_bfloat16* dout, AttentionLayout out_layout, const float* lse, const float* delta,
    float* dq_acc, AttentionLayout dq_layout, __nv_bfloat16* dk, __nv_bfloat16* dv, AttentionLayout dkv_layout,
    float scale_log2, float scale) {
  constexpr int kDT = kD / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  BackwardSmem<kD>& sm = *reinterpret_cast<BackwardSmem<kD>*>(smem_raw);

  const int kb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int n_qblocks = (x.T + kBlockRows - 1) / kBlockRows;
  const int64_t in_off = b * x.in.batch + h * x.in.head, out_off = b * out_layout.batch + h * out_layout.head;
  const __nv_bfloat16 *q = x.q + in_off, *k = x.k + in_off, *v = x.v + in_off, *dO = dout + out_off;
  const int64_t stat_off = (static_cast<int64_t>(b) * x.H + h) * x.T;
  const int64_t dq_off = b * dq_layout.batch + h * dq_layout.head;

  load_tile_async<kD>(sm.k, k, x.in.row, kb * kBlockRows, x.T);
  load_tile_async<kD>(sm.v, v, x.in.row, kb * kBlockRows, x.T);
  load_tile_async<kD>(sm.q[0], q, x.in.row, kb * kBlockRows, x.T);
  load_tile_async<kD>(sm.dout[0], dO, out_layout.row, kb * kBlockRows, x.T);
  cp_async_commit();
  load_row_stats<kD>(sm.lse2[0], sm.delta[0], lse + stat_off, delta + stat_off, kb * kBlockRows, x.T);

  float dk_acc[kDT][4], dv_acc[kDT][4];
#pragma unroll
  for (int n = 0; n < kDT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[n][e] = dv_acc[n][e] = 0.f;
  uint32_t ka[kD / 16][4], va[kD / 16][4];
  const int key_lo = kb * kBlockRows + warp * 16 + g;  // this thread's first key row

  for (int i = kb; i < n_qblocks; ++i) {
    const int buf = (i - kb) & 1;
    if (i + 1 < n_qblocks) {
      load_tile_async<kD>(sm.q[buf ^ 1], q, x.in.row, (i + 1) * kBlockRows, x.T);
      load_tile_async<kD>(sm.dout[buf ^ 1], dO, out_layout.row, (i + 1) * kBlockRows, x.T);
      load_row_stats<kD>(sm.lse2[buf ^ 1], sm.delta[buf ^ 1], lse + stat_off, delta + stat_off,
                         (i + 1) * kBlockRows, x.T);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (i == kb) {
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        load_a<kD>(ka[kk], sm.k, warp * 16, kk * 16);
        load_a<kD>(va[kk], sm.v, warp * 16, kk * 16);
      }
    }

#pragma unroll
    for (int c = 0; c < 4; ++c) {  // queries 16 c .. 16 c + 15 of the block
      float s[2][4], dp[2][4];
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        uint32_t qb4[4], ob4[4];
        load_b_rows<kD>(qb4, sm.q[buf], c * 16, kk * 16);
        mma_bf16(s[0], ka[kk], qb4[0], qb4[1]);
        mma_bf16(s[1], ka[kk], qb4[2], qb4[3]);
        load_b_rows<kD>(ob4, sm.dout[buf], c * 16, kk * 16);
        mma_bf16(dp[0], va[kk], ob4[0], ob4[1]);
        mma_bf16(dp[1], va[kk], ob4[2], ob4[3]);
      }
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qcol = c * 16 + n * 8 + 2 * t + (e & 1);
          const int key = key_lo + (e >> 1) * 8;
          float p = exp2f(s[n][e] * scale_log2 - sm.lse2[buf][qcol]);
          if (i == kb && key > i * kBlockRows + qcol) p = 0.f;
          s[n][e] = p;
          dp[n][e] = p * (dp[n][e] - sm.delta[buf][qcol]);
        }
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          *reinterpret_cast<uint32_t*>(sm.ds + swz<kBlockRows>(warp * 16 + g + r * 8, c * 16 + n * 8 + 2 * t)) =
              pack_bf16(dp[n][2 * r], dp[n][2 * r + 1]);
      uint32_t pa[4], dsa[4];
      acc_to_a(pa, s[0], s[1]);
      acc_to_a(dsa, dp[0], dp[1]);
#pragma unroll
      for (int n = 0; n < kDT; n += 2) {
        uint32_t ob[4], qb[4];
        load_b_cols<kD>(ob, sm.dout[buf], n * 8, c * 16);
        mma_bf16(dv_acc[n], pa, ob[0], ob[1]);
        mma_bf16(dv_acc[n + 1], pa, ob[2], ob[3]);
        load_b_cols<kD>(qb, sm.q[buf], n * 8, c * 16);
        mma_bf16(dk_acc[n], dsa, qb[0], qb[1]);
        mma_bf16(dk_acc[n + 1], dsa, qb[2], qb[3]);
      }
    }
    __syncthreads();  // dS^T complete

    float dq[kDT][4];
#pragma unroll
    for (int n = 0; n < kDT; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t a[4];
      load_a_trans<kBlockRows>(a, sm.ds, warp * 16, kk * 16);
#pragma unroll
      for (int n = 0; n < kDT; n += 2) {
        uint32_t kb2[4];
        load_b_cols<kD>(kb2, sm.k, n * 8, kk * 16);
        mma_bf16(dq[n], a, kb2[0], kb2[1]);
        mma_bf16(dq[n + 1], a, kb2[2], kb2[3]);
      }
    }
    add_dq<kD>(dq_acc, dq_layout, dq_off, i * kBlockRows + warp * 16, x.T, dq, scale);
    __syncthreads();  // buffers and dS^T are rewritten next iteration
  }

  const int64_t kv_off = b * dkv_layout.batch + h * dkv_layout.head;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = key_lo + r * 8;
    if (row >= x.T) continue;
    __nv_bfloat16* dk_row = dk + kv_off + static_cast<int64_t>(row) * dkv_layout.row;
    __nv_bfloat16* dv_row = dv + kv_off + static_cast<int64_t>(row) * dkv_layout.row;
#pragma unroll
    for (int n = 0; n < kDT; ++n) {
      *reinterpret_cast<uint32_t*>(dk_row + n * 8 + 2 * t) =
          pack_bf16(dk_acc[n][2 * r] * scale, dk_acc[n][2 * r + 1] * scale);
      *reinterpret_cast<uint32_t*>(dv_row + n * 8 + 2 * t) = pack_bf16(dv_acc[n][2 * r], dv_acc[n][2 * r + 1]);
    }
  }
}

// dq (bf16, layout `dst`) = dq_acc (f32, layout `src`).
__global__ void round_dq_kernel(const float* dq_acc, AttentionLayout src, __nv_bfloat16* dq, AttentionLayout dst,
                                int H, int T, int D, int64_t n) {
  ZT_GRID_STRIDE(i, n) {
    const int d = static_cast<int>(i % D);
    const int tt = static_cast<int>((i / D) % T), h = static_cast<int>((i / (int64_t{D} * T)) % H);
    const int64_t b = i / (int64_t{D} * T * H);
    dq[b * dst.batch + h * dst.head + tt * dst.row + d] =
        __float2bfloat16_rn(dq_acc[b * src.batch + h * src.head + tt * src.row + d]);
  }
}

template <class F>
void with_head_dim(int64_t D, F&& f) {
  if (D == 32) f(std::integral_constant<int, 32>{});
  else if (D == 64) f(std::integral_constant<int, 64>{});
  else ZT_FAIL("flash attention: head size ", D, " not supported (32 or 64)");
}

bool layout_aligned(const AttentionLayout& l) { return l.batch % 8 == 0 && l.head % 8 == 0 && l.row % 8 == 0; }

}  // namespace

void flash_attention_forward_cuda(const FlashArgs& a, void* out, const AttentionLayout& out_layout, float* lse,
                                  int device) {
  ZT_CHECK(flash_attention_supported(DType::bf16, a.D), "flash attention: head size ", a.D, " not supported");
  ZT_CHECK(a.Hkv == a.H, "flash attention: ", a.Hkv, " key/value heads for ", a.H,
           " query heads: grouped heads are not supported (the caller picks cuDNN or the composite)");
  ZT_CHECK(aligned16(a.q) && aligned16(a.k) && aligned16(a.v) && aligned16(out) && layout_aligned(a.in) &&
               layout_aligned(out_layout),
           "flash attention: operands must be 16-byte aligned with strides a multiple of 8 elements");
  ZT_CHECK(a.T < (1 << 30) && a.H < 65536 && a.B < 65536, "flash attention: shape too large");
  if (a.B * a.H * a.T == 0) return;
  OpRange range("attention");
  cuda::set_device(device);
  cudaStream_t s = cuda::current_stream();
  const Views x{static_cast<const __nv_bfloat16*>(a.q), static_cast<const __nv_bfloat16*>(a.k),
                static_cast<const __nv_bfloat16*>(a.v), a.in, static_cast<int>(a.T), static_cast<int>(a.H)};
  const float scale_log2 = kLog2e / std::sqrt(static_cast<float>(a.D));
  const dim3 grid(static_cast<unsigned>((a.T + kBlockRows - 1) / kBlockRows), static_cast<unsigned>(a.H),
                  static_cast<unsigned>(a.B));
  with_head_dim(a.D, [&](auto d) {
    flash_forward_kernel<decltype(d)::value><<<grid, kThreadsPerCta, 0, s>>>(
        x, static_cast<__nv_bfloat16*>(out), out_layout, lse, scale_log2);
  });
  ZT_CUDA_CHECK_LAUNCH();
}

void flash_attention_backward_cuda(const FlashArgs& a, const void* out, const void* dout,
                                   const AttentionLayout& out_layout, const float* lse, void* dq, void* dk, void* dv,
                                   const AttentionLayout& grad_layout, int device) {
  ZT_CHECK(flash_attention_supported(DType::bf16, a.D), "flash attention: head size ", a.D, " not supported");
  ZT_CHECK(a.Hkv == a.H, "flash attention: ", a.Hkv, " key/value heads for ", a.H,
           " query heads: grouped heads are not supported (the caller picks cuDNN or the composite)");
  ZT_CHECK(aligned16(a.q) && aligned16(a.k) && aligned16(a.v) && aligned16(out) && aligned16(dout) &&
               aligned16(dq) && aligned16(dk) && aligned16(dv) && layout_aligned(a.in) &&
               layout_aligned(out_layout) && layout_aligned(grad_layout),
           "flash attention: operands must be 16-byte aligned with strides a multiple of 8 elements");
  const int64_t rows = a.B * a.H * a.T;
  if (rows == 0) return;
  OpRange range("attention");
  cuda::set_device(device);
  cudaStream_t s = cuda::current_stream();
  const Device dev = Device::cuda(device);
  Tensor delta = Tensor::empty({rows}, DType::f32, dev);
  // dQ accumulates in f32 over the key blocks: [B, T, H, D], zeroed first.
  Tensor dq_acc = Tensor::empty({a.B, a.T, a.H, a.D}, DType::f32, dev);
  ZT_CUDA_CHECK(cudaMemsetAsync(dq_acc.raw_data(), 0, static_cast<size_t>(dq_acc.numel()) * sizeof(float), s));
  const AttentionLayout acc_layout{a.T * a.H * a.D, a.D, a.H * a.D};
  const Views x{static_cast<const __nv_bfloat16*>(a.q), static_cast<const __nv_bfloat16*>(a.k),
                static_cast<const __nv_bfloat16*>(a.v), a.in, static_cast<int>(a.T), static_cast<int>(a.H)};
  const float scale = 1.f / std::sqrt(static_cast<float>(a.D)), scale_log2 = kLog2e * scale;
  with_head_dim(a.D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    row_delta_kernel<kD><<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreadsPerCta, 0, s>>>(
        static_cast<const __nv_bfloat16*>(dout), static_cast<const __nv_bfloat16*>(out), out_layout,
        static_cast<float*>(delta.raw_data()), static_cast<int>(a.H), static_cast<int>(a.T), rows);
    ZT_CUDA_CHECK_LAUNCH();
    const int smem = static_cast<int>(sizeof(BackwardSmem<kD>));
    auto kernel = flash_backward_kernel<kD>;
    // Over 48 KB of dynamic shared memory needs the opt-in (per device; cheap to repeat).
    ZT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    const dim3 grid(static_cast<unsigned>((a.T + kBlockRows - 1) / kBlockRows), static_cast<unsigned>(a.H),
                    static_cast<unsigned>(a.B));
    kernel<<<grid, kThreadsPerCta, smem, s>>>(
        x, static_cast<const __nv_bfloat16*>(dout), out_layout, lse, static_cast<const float*>(delta.raw_data()),
        static_cast<float*>(dq_acc.raw_data()), acc_layout, static_cast<__nv_bfloat16*>(dk),
        static_cast<__nv_bfloat16*>(dv), grad_layout, scale_log2, scale);
    ZT_CUDA_CHECK_LAUNCH();
  });
  const int64_t n = rows * a.D;
  round_dq_kernel<<<grid_for(n, device), kThreads, 0, s>>>(static_cast<const float*>(dq_acc.raw_data()), acc_layout,
                                                          static_cast<__nv_bfloat16*>(dq), grad_layout,
                                                          static_cast<int>(a.H), static_cast<int>(a.T),
                                                          static_cast<int>(a.D), n);
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::ops
