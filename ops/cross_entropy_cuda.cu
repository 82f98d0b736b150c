// CUDA kernels of the cross-entropy op (interface: cross_entropy_kernels.h; math:
// docs/cross_entropy.md; measurements: docs/notes/xent_cuda.md).
//
// One rank, 16-byte-aligned f32/bf16 rows (the fast path, fused_cluster_kernel): a cluster
// of C CTAs owns one row at a time; CTA k copies its slice of the row from HBM into shared
// memory with a bulk copy (cp.async.bulk onto an mbarrier), computes the slice's (max,
// sum exp, sum x, x_y), the C CTAs exchange those four floats through distributed shared
// memory (each pushes them into every peer's inbox with st.async onto the peer's mbarrier),
// and each writes its slice's gradient from shared memory with 16-byte stores. The logits
// are read from HBM once and the gradient written once, in place or not. Several CTAs share
// an SM, so one's memory traffic overlaps another's arithmetic: C = 1 (no cluster) for a row
// of 50304 bf16 (98 KiB, two CTAs per SM), C = 4 for 128256 bf16 (63 KiB slices, three per
// SM); see pick_cluster(). The grid is persistent (as many clusters as fit at once), each
// cluster looping over rows.
//
// Padded rows (num_classes < the width): only the real-class prefix is loaded and sliced
// over the cluster (rounded up to whole vectors; the one vector shared by the last classes
// and the first padding columns is masked element by element, by one thread), and the
// padded tail of the gradient is zero-filled with 16-byte stores, never read.
//
// Everything else (f64 logits, soft-capped logits, rows not 16-byte aligned, rows under 4 KiB or over 896 KiB)
// runs rowwise_kernel<fused>: a CTA per row, online statistics from global memory, then a
// second read for the gradient (mostly from L2). Vocab-parallel: rowwise_kernel<local_stats>
// (one read) and rowwise_kernel<finish> (one read, one write) around the caller's all-gather.
//
// No host synchronisation and no allocation anywhere: the row count for the mean comes from
// count_rows_kernel on the device, bad targets raise a flag the caller passes (cross_entropy()
// passes a deferred check's, framework/cuda/deferred_check.h), so the kernel sequence can be
// captured in a CUDA graph. z_loss_weight and label_smoothing are plain kernel arguments.
//
// Tuning knobs (environment, read at every call; for benchmarks and tests):
//   ZT_XENT_KERNEL=rowwise         force the two-read fallback kernel
//   ZT_XENT_CLUSTER=1..8           cluster size of the fast path
//   ZT_XENT_THREADS=256|512        threads per CTA of the fast path
//   ZT_XENT_STAGES=1..8            bulk copies per slice
//   ZT_XENT_EXCHANGE=push|barrier  cluster exchange: remote stores onto each peer's mbarrier
//                                  (default), or own slots read after a cluster barrier
#include "ops/cross_entropy_kernels.h"

#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/kernel_utils.cuh"
#include "framework/cuda/stream.h"

namespace zt::ops::xent {

namespace {

namespace cg = cooperative_groups;

using cuda::aligned16;
using cuda::kLog2e;
using cuda::smem_addr;

// ------------------------------------------------------------------------------------------
// Element types and math
// ------------------------------------------------------------------------------------------

template <class T> struct Elem;
template <> struct Elem<float> {
  using Acc = float;
  static constexpr int kVec = 4;  // elements per 16-byte vector
};
template <> struct Elem<__nv_bfloat16> {
  using Acc = float;
  static constexpr int kVec = 8;
};
template <> struct Elem<double> {
  using Acc = double;
  static constexpr int kVec = 2;
};

template <class T>
__device__ __forceinline__ typename Elem<T>::Acc to_acc(T x) {
  return cuda::convert_element<typename Elem<T>::Acc>(x);
}

template <class T, class A>
__device__ __forceinline__ T from_acc(A x) {
  return cuda::convert_element<T>(x);
}

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// exp(x - m) with the reference m prepared once per row: float works in base 2 (an FADD, an
// FMUL and one MUFU per element), double calls exp. The difference x - m is taken first: it
// is exact for the logits that matter (those near m), where the one-FMA form x log2e -
// m log2e carried m log2e's rounding (2^-10 at |m| ~ 1e4) into every exponent.
template <class A> struct Exp;
template <> struct Exp<float> {
  static __device__ __forceinline__ float ref(float m) { return m; }
  static __device__ __forceinline__ float of(float x, float ref) { return exp2_approx((x - ref) * kLog2e); }
  static __device__ __forceinline__ float diff(float a, float b) { return exp2_approx((a - b) * kLog2e); }
};
template <> struct Exp<double> {
  static __device__ __forceinline__ double ref(double m) { return m; }
  static __device__ __forceinline__ double of(double x, double ref) { return exp(x - ref); }
  static __device__ __forceinline__ double diff(double a, double b) { return exp(a - b); }
};

// 16-byte vector <-> kVec accumulator values.
template <class T, class A = typename Elem<T>::Acc>
__device__ __forceinline__ void unpack(const uint4& v, A (&x)[Elem<T>::kVec]) {
  if constexpr (std::is_same_v<T, float>) {
    x[0] = __uint_as_float(v.x), x[1] = __uint_as_float(v.y), x[2] = __uint_as_float(v.z), x[3] = __uint_as_float(v.w);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      x[2 * i] = __uint_as_float(w[i] << 16);
      x[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  } else {
    x[0] = __hiloint2double(static_cast<int>(v.y), static_cast<int>(v.x));
    x[1] = __hiloint2double(static_cast<int>(v.w), static_cast<int>(v.z));
  }
}

template <class T, class A = typename Elem<T>::Acc>
__device__ __forceinline__ uint4 pack(const A (&x)[Elem<T>::kVec]) {
  uint4 v;
  if constexpr (std::is_same_v<T, float>) {
    v.x = __float_as_uint(x[0]), v.y = __float_as_uint(x[1]), v.z = __float_as_uint(x[2]), v.w = __float_as_uint(x[3]);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      __nv_bfloat162 h = __floats2bfloat162_rn(x[2 * i], x[2 * i + 1]);
      std::memcpy(&w[i], &h, 4);
    }
    v = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
    v.x = static_cast<uint32_t>(__double2loint(x[0])), v.y = static_cast<uint32_t>(__double2hiint(x[0]));
    v.z = static_cast<uint32_t>(__double2loint(x[1])), v.w = static_cast<uint32_t>(__double2hiint(x[1]));
  }
  return v;
}

// Statistics of a slice of a row: max, sum of exp(x - max), sum of x, x at the target (or 0).
template <class A>
struct Stats {
  A m, d, s, xy;
};

template <class A>
__device__ __forceinline__ Stats<A> empty_stats() {
  return {-std::numeric_limits<A>::infinity(), A(0), A(0), A(0)};
}

template <class A>
__device__ __forceinline__ Stats<A> combine(const Stats<A>& a, const Stats<A>& b) {
  const A m = a.m > b.m ? a.m : b.m;
  // a.m == m also covers two empty slices (both -inf), where exp(-inf - -inf) would be NaN.
  const A da = a.m == m ? a.d : a.d * Exp<A>::diff(a.m, m);
  const A db = b.m == m ? b.d : b.d * Exp<A>::diff(b.m, m);
  return {m, da + db, a.s + b.s, a.xy + b.xy};
}

template <class A>
__device__ __forceinline__ Stats<A> shfl_xor(const Stats<A>& v, int mask) {
  return {__shfl_xor_sync(0xffffffffu, v.m, mask), __shfl_xor_sync(0xffffffffu, v.d, mask),
          __shfl_xor_sync(0xffffffffu, v.s, mask), __shfl_xor_sync(0xffffffffu, v.xy, mask)};
}

template <class A>
__device__ __forceinline__ Stats<A> warp_reduce(Stats<A> v) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) v = combine(v, shfl_xor(v, mask));
  return v;
}

// Block-wide combine; every thread gets the result. scratch holds THREADS/32 + 1 entries.
// Two barriers; the caller must place a barrier between two uses of the same scratch.
template <int THREADS, class A>
__device__ __forceinline__ Stats<A> block_reduce(Stats<A> v, Stats<A>* scratch) {
  constexpr int kWarps = THREADS / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_reduce(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    Stats<A> w = lane < kWarps ? scratch[lane] : empty_stats<A>();
    w = warp_reduce(w);
    if (lane == 0) scratch[kWarps] = w;
  }
  __syncthreads();
  return scratch[kWarps];
}

// Per-row results from the combined statistics over the global vocabulary.
// p_j = exp(x_j - m) / d, not exp(x_j - lse): lse = m + log d is rounded to A, and that
// rounding (5e-4 relative at |x| ~ 1e4 in f32) would reach every p_j. The loss likewise is
// (1-e)(m - x_y) + log d [+ e (m - S/V)], differences to m that stay exact where lse - x_y
// loses log d (logits all at 3e38: 0 instead of log V).
template <class A>
struct RowTerms {
  A lse;
  A row_loss, z_row;
  A coef;      // multiplies exp(x_j - m):   (1 + 2 z lse) * scale / d
  A uniform;   // added to every column:     -e/V * scale
  A at_target; // added at the target:       -(1 - e) * scale
  A m_ref;     // Exp<A>::ref(m)
};

template <class A>
__device__ __forceinline__ RowTerms<A> row_terms(const Stats<A>& st, A vocab, A smoothing, A z, A scale) {
  RowTerms<A> r;
  A log_d;
  if constexpr (std::is_same_v<A, float>) log_d = logf(st.d);
  else log_d = log(st.d);
  r.lse = st.m + log_d;
  A ce = (A(1) - smoothing) * (st.m - st.xy) + log_d;
  // Without smoothing the term is absent, not 0 * S: a masked (-inf) logit makes S = -inf.
  if (smoothing != A(0)) ce += smoothing * (st.m - st.s / vocab);
  r.z_row = z * r.lse * r.lse;
  r.row_loss = ce + r.z_row;
  r.coef = (A(1) + A(2) * z * r.lse) * scale / st.d;
  r.uniform = -smoothing / vocab * scale;
  r.at_target = -(A(1) - smoothing) * scale;
  r.m_ref = Exp<A>::ref(st.m);
  return r;
}

template <class A>
__device__ __forceinline__ A grad_of(A x, const RowTerms<A>& r) {
  return Exp<A>::of(x, r.m_ref) * r.coef + r.uniform;
}

// ------------------------------------------------------------------------------------------
// Row counting (mean reduction) without a host round trip
// ------------------------------------------------------------------------------------------

constexpr int kCountThreads = 1024;

template <class Tgt, class S>
__global__ void __launch_bounds__(kCountThreads) count_rows_kernel(const Tgt* targets, int64_t n, int64_t ignore_index,
                                                                   bool mean, int64_t* count, S* grad_scale) {
  __shared__ unsigned long long partial[kCountThreads / 32];
  unsigned long long c = 0;
  for (int64_t i = threadIdx.x; i < n; i += kCountThreads) c += static_cast<int64_t>(targets[i]) != ignore_index;
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) c += __shfl_xor_sync(0xffffffffu, c, mask);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = c;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long total = 0;
    for (int w = 0; w < kCountThreads / 32; ++w) total += partial[w];
    *count = static_cast<int64_t>(total);
    *grad_scale = mean ? (total > 0 ? S(1) / static_cast<S>(total) : S(0)) : S(1);
  }
}

// ------------------------------------------------------------------------------------------
// The result's scalars: loss = grad_scale * sum row_loss, ce_sum, z_sum (one CTA, fixed order)
// ------------------------------------------------------------------------------------------

template <class A>
__global__ void __launch_bounds__(kCountThreads) reduce_rows_kernel(const A* row_loss, const A* z_row, int64_t n,
                                                                    const A* grad_scale, A* loss, A* ce_sum,
                                                                    A* z_sum) {
  __shared__ double partial[2][kCountThreads / 32];
  double l = 0, z = 0;  // f64 partial sums: the order is fixed, the rounding small
  for (int64_t i = threadIdx.x; i < n; i += kCountThreads) {
    l += static_cast<double>(row_loss[i]);
    z += static_cast<double>(z_row[i]);
  }
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) {
    l += __shfl_xor_sync(0xffffffffu, l, mask);
    z += __shfl_xor_sync(0xffffffffu, z, mask);
  }
  if (threadIdx.x % 32 == 0) partial[0][threadIdx.x / 32] = l, partial[1][threadIdx.x / 32] = z;
  __syncthreads();
  if (threadIdx.x == 0) {
    double lt = 0, zt = 0;
    for (int w = 0; w < kCountThreads / 32; ++w) lt += partial[0][w], zt += partial[1][w];
    if (loss) *loss = static_cast<A>(static_cast<double>(*grad_scale) * lt);
    *ce_sum = static_cast<A>(lt - zt);
    *z_sum = static_cast<A>(zt);
  }
}

// ------------------------------------------------------------------------------------------
// Fast path: one read of the logits through shared memory, a cluster per row
// ------------------------------------------------------------------------------------------

constexpr int kMaxStages = 8;
constexpr int kMaxCluster = 8;

struct FusedArgs {
  const void* logits;
  void* grad;  // may equal logits; null: forward only
  const void* targets;
  float* row_loss;
  float* lse;
  float* z_row;
  int* bad_target;
  const float* grad_scale;
  int64_t rows;
  int64_t width;    // elements per row (the row stride), padding included
  int64_t classes;  // real classes: columns >= classes are padding, never read, gradient 0
  int64_t ignore_index;
  float smoothing, z;
  int64_t row_vecs;  // 16-byte vectors per row (width)
  int slice_vecs;    // vectors of the real-class prefix per CTA slice (the last CTA's may be shorter)
  int stages;        // bulk copies per slice
  bool push;         // exchange: remote stores onto an mbarrier (true) or a cluster barrier
};

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t addr = smem_addr(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
}

// The same wait with cluster scope: the data on this barrier came from other CTAs' stores.
__device__ __forceinline__ void mbar_wait_cluster(uint64_t* bar, uint32_t parity) {
  const uint32_t addr = smem_addr(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
}

// Global -> shared bulk copy completing on an mbarrier (bytes and addresses multiples of 16).
__device__ __forceinline__ void bulk_load(void* dst_smem, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          smem_addr(dst_smem)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

// 16 bytes into CTA `rank`'s shared memory at the address `local` has here, completing on
// that CTA's mbarrier at the address `bar` has here.
__device__ __forceinline__ void push_to_rank(const Stats<float>& v, const void* local, const uint64_t* bar,
                                             uint32_t rank) {
  uint32_t raddr, rbar;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(raddr) : "r"(smem_addr(local)), "r"(rank));
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(rbar) : "r"(smem_addr(bar)), "r"(rank));
  asm volatile(
      "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];" ::"r"(raddr),
      "r"(__float_as_uint(v.m)), "r"(__float_as_uint(v.d)), "r"(__float_as_uint(v.s)), "r"(__float_as_uint(v.xy)),
      "r"(rbar)
      : "memory");
}

// Shared memory layout of the fast path; the slice buffer starts 128-byte aligned.
template <int THREADS>
struct FastLayout {
  static constexpr int kWarps = THREADS / 32;
  static constexpr size_t kBars = 0;                                           // uint64_t[kMaxStages]
  static constexpr size_t kInboxBars = kBars + 8 * kMaxStages;                // uint64_t[2]
  static constexpr size_t kSlots = kInboxBars + 16;                           // Stats<float>[2][kMaxCluster]
  static constexpr size_t kScratch = kSlots + 2 * kMaxCluster * sizeof(Stats<float>);  // [kWarps + 1]
  static constexpr size_t kBuffer = (kScratch + (kWarps + 1) * sizeof(Stats<float>) + 127) / 128 * 128;
  static size_t bytes(int slice_vecs) { return kBuffer + static_cast<size_t>(slice_vecs) * 16; }
};

template <class T, class Tgt, int THREADS>
__global__ void __launch_bounds__(THREADS, 1024 / THREADS) fused_cluster_kernel(const FusedArgs a) {
  using L = FastLayout<THREADS>;
  constexpr int kVec = Elem<T>::kVec;
  extern __shared__ __align__(128) unsigned char smem[];
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + L::kBars);
  uint64_t* inbox_bars = reinterpret_cast<uint64_t*>(smem + L::kInboxBars);
  Stats<float>* slots = reinterpret_cast<Stats<float>*>(smem + L::kSlots);  // [2][kMaxCluster]
  Stats<float>* scratch = reinterpret_cast<Stats<float>*>(smem + L::kScratch);
  uint4* buf = reinterpret_cast<uint4*>(smem + L::kBuffer);

  cg::cluster_group cluster = cg::this_cluster();
  const int csize = static_cast<int>(cluster.num_blocks());
  const int crank = static_cast<int>(cluster.block_rank());
  const int64_t cluster_id = blockIdx.x / csize;
  const int64_t clusters = gridDim.x / csize;
  const int tid = threadIdx.x;

  // Only the real-class prefix of a row is loaded: valid_vecs vectors, the last of which
  // may hold the last classes and the first padding columns. This CTA's slice: vectors
  // [begin, begin + nvec) of the prefix, copied in `stages` pieces; its first nfull are
  // real classes throughout, and when nfull < nvec vector nfull holds tail_elems classes.
  const int64_t valid_vecs = (a.classes + kVec - 1) / kVec;
  const int64_t begin = static_cast<int64_t>(crank) * a.slice_vecs;
  const int64_t left = valid_vecs - begin;
  const int nvec = left <= 0 ? 0 : static_cast<int>(left < a.slice_vecs ? left : int64_t{a.slice_vecs});
  const int64_t full_left = a.classes / kVec - begin;
  const int nfull = full_left <= 0 ? 0 : static_cast<int>(full_left < nvec ? full_left : int64_t{nvec});
  const bool has_partial = nfull < nvec;
  const int tail_elems = static_cast<int>(a.classes - (begin + nfull) * kVec);  // when has_partial
  const int stage_vecs = (nvec + a.stages - 1) / a.stages;

  if (tid == 0) {
    for (int s = 0; s < a.stages; ++s) mbar_init(&bars[s], 1);
    mbar_init(&inbox_bars[0], 1);
    mbar_init(&inbox_bars[1], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  // Peers push into this CTA's inbox only after its barriers exist.
  if (csize > 1) cluster.sync();
  else __syncthreads();

  const T* logits = static_cast<const T*>(a.logits);
  T* grad = static_cast<T*>(a.grad);
  const Tgt* targets = static_cast<const Tgt*>(a.targets);
  const float scale = grad ? *a.grad_scale : 0.f;
  const float vocab = static_cast<float>(a.classes);
  uint32_t parity = 0;        // phase of the stage barriers: flips with every row loaded
  uint32_t exchange = 0;      // rows exchanged through the cluster: picks the slot
  uint32_t inbox_parity = 0;  // bit b: phase of inbox barrier b

  for (int64_t row = cluster_id; row < a.rows; row += clusters) {
    const int64_t target = static_cast<int64_t>(targets[row]);
    const uint4* src = reinterpret_cast<const uint4*>(logits + row * a.width) + begin;
    uint4* dst_row = grad ? reinterpret_cast<uint4*>(grad + row * a.width) : nullptr;
    uint4* dst = grad ? dst_row + begin : nullptr;
    // The padded vectors past the prefix get a zero gradient, shared out over the cluster.
    auto zero_padding = [&] {
      for (int64_t v = valid_vecs + static_cast<int64_t>(crank) * THREADS + tid; v < a.row_vecs;
           v += static_cast<int64_t>(csize) * THREADS)
        dst_row[v] = make_uint4(0, 0, 0, 0);
    };

    // Ignored rows and out-of-range targets (as on the CPU): zero gradient, no load; the
    // outputs are 0, or NaN with the flag raised. The same branch in every CTA of the cluster.
    const bool ignored = target == a.ignore_index;
    if (ignored || target < 0 || target >= a.classes) {
      if (dst) {
        for (int v = tid; v < nvec; v += THREADS) dst[v] = make_uint4(0, 0, 0, 0);
        zero_padding();
      }
      if (crank == 0 && tid == 0) {
        a.row_loss[row] = a.lse[row] = a.z_row[row] = ignored ? 0.f : NAN;
        if (!ignored) *a.bad_target = 1;
      }
      continue;
    }

    // 1. Bulk-copy the slice into shared memory. The barrier at the end of the previous
    //    row ordered every thread's reads of the buffer before this overwrite.
    if (tid == 0) {
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      for (int s = 0; s < a.stages; ++s) {
        const int lo = s * stage_vecs, n = min(nvec - lo, stage_vecs);
        if (n <= 0) break;
        mbar_expect_tx(&bars[s], static_cast<uint32_t>(n) * 16);
        bulk_load(buf + lo, src + lo, static_cast<uint32_t>(n) * 16, &bars[s]);
      }
    }

    // 2. Per-thread max as each stage lands, then sum of exp and of x over the same elements
    //    (two vectors per step: independent shared-memory loads and accumulators).
    float m0 = -INFINITY, m1 = -INFINITY;
    for (int s = 0; s < a.stages; ++s) {
      const int lo = s * stage_vecs, hi = min(nvec, lo + stage_vecs);
      if (hi <= lo) break;
      mbar_wait(&bars[s], parity);
      const int hi_full = min(hi, nfull);
      int v = lo + tid;
      for (; v + THREADS < hi_full; v += 2 * THREADS) {
        float x[kVec], y[kVec];
        unpack<T>(buf[v], x);
        unpack<T>(buf[v + THREADS], y);
#pragma unroll
        for (int i = 0; i < kVec; ++i) m0 = fmaxf(m0, x[i]), m1 = fmaxf(m1, y[i]);
      }
      if (v < hi_full) {
        float x[kVec];
        unpack<T>(buf[v], x);
#pragma unroll
        for (int i = 0; i < kVec; ++i) m0 = fmaxf(m0, x[i]);
      }
    }
    parity ^= 1;
    // The vector shared by the last classes and the padding: its classes only (thread 0
    // waited for every stage).
    if (has_partial && tid == 0) {
      float x[kVec];
      unpack<T>(buf[nfull], x);
#pragma unroll
      for (int i = 0; i < kVec; ++i)
        if (i < tail_elems) m0 = fmaxf(m0, x[i]);
    }
    const float m = fmaxf(m0, m1);
    Stats<float> st{m, 0.f, 0.f, 0.f};
    if (m > -INFINITY) {
      const float ref = Exp<float>::ref(m);
      float d0 = 0.f, d1 = 0.f, s0 = 0.f, s1 = 0.f;
      for (int s = 0; s < a.stages; ++s) {
        const int lo = s * stage_vecs, hi = min(nfull, lo + stage_vecs);
        int v = lo + tid;
        for (; v + THREADS < hi; v += 2 * THREADS) {
          float x[kVec], y[kVec];
          unpack<T>(buf[v], x);
          unpack<T>(buf[v + THREADS], y);
#pragma unroll
          for (int i = 0; i < kVec; ++i) {
            d0 += Exp<float>::of(x[i], ref);
            d1 += Exp<float>::of(y[i], ref);
            s0 += x[i];
            s1 += y[i];
          }
        }
        if (v < hi) {
          float x[kVec];
          unpack<T>(buf[v], x);
#pragma unroll
          for (int i = 0; i < kVec; ++i) {
            d0 += Exp<float>::of(x[i], ref);
            s0 += x[i];
          }
        }
      }
      if (has_partial && tid == 0) {
        float x[kVec];
        unpack<T>(buf[nfull], x);
#pragma unroll
        for (int i = 0; i < kVec; ++i)
          if (i < tail_elems) {
            d0 += Exp<float>::of(x[i], ref);
            s0 += x[i];
          }
      }
      st.d = d0 + d1;
      st.s = s0 + s1;
    }
    // x at the target, from the CTA whose slice holds it (thread 0 waited for every stage).
    const int64_t t_local = target - begin * kVec;
    if (tid == 0 && t_local >= 0 && t_local < static_cast<int64_t>(nvec) * kVec)
      st.xy = to_acc(reinterpret_cast<const T*>(buf)[t_local]);
    st = block_reduce<THREADS>(st, scratch);

    // 3. Combine the cluster's slices through distributed shared memory: either every CTA
    //    pushes its stats into every peer's inbox (remote stores completing on the peer's
    //    mbarrier: each CTA waits only for the data it needs), or each writes its own slot
    //    and a cluster barrier precedes the reads.
    if (csize > 1) {
      const uint32_t slot = exchange & 1;
      Stats<float>* inbox = slots + slot * kMaxCluster;
      const int lane = tid % 32;
      Stats<float> w = empty_stats<float>();
      if (a.push) {
        if (tid == 0) {
          mbar_expect_tx(&inbox_bars[slot], static_cast<uint32_t>(csize) * 16);
          for (int r = 0; r < csize; ++r) push_to_rank(st, &inbox[crank], &inbox_bars[slot], static_cast<uint32_t>(r));
        }
        mbar_wait_cluster(&inbox_bars[slot], (inbox_parity >> slot) & 1);
        inbox_parity ^= 1u << slot;
        if (lane < csize) w = inbox[lane];
      } else {
        if (tid == 0) inbox[0] = st;
        cluster.sync();
        if (lane < csize) w = *cluster.map_shared_rank(&inbox[0], lane);
      }
#pragma unroll
      for (int mask = 1; mask < kMaxCluster; mask <<= 1) w = combine(w, shfl_xor(w, mask));
      st = {__shfl_sync(0xffffffffu, w.m, 0), __shfl_sync(0xffffffffu, w.d, 0), __shfl_sync(0xffffffffu, w.s, 0),
            __shfl_sync(0xffffffffu, w.xy, 0)};
      ++exchange;
    }

    const RowTerms<float> r = row_terms<float>(st, vocab, a.smoothing, a.z, scale);
    if (crank == 0 && tid == 0) {
      a.row_loss[row] = r.row_loss;
      a.lse[row] = r.lse;
      a.z_row[row] = r.z_row;
    }

    // 4. Gradient of the slice, from shared memory, 16-byte stores; 0 at padding columns.
    if (dst) {
      auto grad_vec = [&](int v, int classes_in_vec) {
        float x[kVec];
        unpack<T>(buf[v], x);
#pragma unroll
        for (int i = 0; i < kVec; ++i) x[i] = i < classes_in_vec ? grad_of(x[i], r) : 0.f;
        const int64_t k = t_local - static_cast<int64_t>(v) * kVec;
        if (static_cast<uint64_t>(k) < static_cast<uint64_t>(kVec)) {
#pragma unroll
          for (int i = 0; i < kVec; ++i)
            if (i == k) x[i] += r.at_target;
        }
        dst[v] = pack<T>(x);
      };
      int v = tid;
      for (; v + THREADS < nfull; v += 2 * THREADS) {
        grad_vec(v, kVec);
        grad_vec(v + THREADS, kVec);
      }
      if (v < nfull) grad_vec(v, kVec);
      if (has_partial && tid == 0) grad_vec(nfull, tail_elems);
      zero_padding();
    }
    __syncthreads();  // buffer and scratch free for the next row
  }
  // No CTA may leave while a peer can still read or write its shared memory.
  if (csize > 1) cluster.sync();
}

// ------------------------------------------------------------------------------------------
// Row-per-CTA kernels on global memory: fallback fused, vocab-parallel stats and finish
// ------------------------------------------------------------------------------------------

// The logit the loss sees: x, or softcap(x) (cross_entropy_kernels.h) when cap > 0.
template <class A>
__device__ __forceinline__ A capped(A x, A cap) {
  A unused;
  return cap > A(0) ? softcap<A>(x, cap, &unused) : x;
}

// Per-thread online statistics over columns [0, n) of a row (no x_y). VEC: 16-byte
// vectors, then the columns of a last, partial vector (n need not be a multiple of it).
template <class T, int THREADS, bool VEC>
__device__ __forceinline__ Stats<typename Elem<T>::Acc> thread_stats(const T* row, int64_t n,
                                                                     typename Elem<T>::Acc cap) {
  using A = typename Elem<T>::Acc;
  constexpr int kVec = Elem<T>::kVec;
  A m = -std::numeric_limits<A>::infinity(), d = 0, s = 0;
  int64_t scalar_from = 0;
  if constexpr (VEC) {
    scalar_from = n / kVec * kVec;
    const uint4* rv = reinterpret_cast<const uint4*>(row);
    for (int64_t v = threadIdx.x; v < n / kVec; v += THREADS) {
      A x[kVec];
      unpack<T>(rv[v], x);
      if (cap > A(0)) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) x[i] = capped(x[i], cap);
      }
      A vm = x[0];
#pragma unroll
      for (int i = 1; i < kVec; ++i) vm = vm > x[i] ? vm : x[i];
      if (vm > m) {
        d = m == -std::numeric_limits<A>::infinity() ? A(0) : d * Exp<A>::diff(m, vm);
        m = vm;
      }
#pragma unroll
      for (int i = 0; i < kVec; ++i) s += x[i];
      if (m == -std::numeric_limits<A>::infinity()) continue;  // masked (-inf) logits only so far
      const A ref = Exp<A>::ref(m);
#pragma unroll
      for (int i = 0; i < kVec; ++i) d += Exp<A>::of(x[i], ref);
    }
  }
  for (int64_t j = scalar_from + threadIdx.x; j < n; j += THREADS) {
    const A x = capped(to_acc(row[j]), cap);
    if (x > m) {
      d = (m == -std::numeric_limits<A>::infinity() ? A(0) : d * Exp<A>::diff(m, x)) + A(1);
      m = x;
    } else if (m > -std::numeric_limits<A>::infinity()) {
      d += Exp<A>::diff(x, m);
    }
    s += x;
  }
  return {m, d, s, A(0)};
}

// d loss / d x of one logit x: of its capped value c when cap > 0, times dc/dx.
template <class A>
__device__ __forceinline__ A grad_of_logit(A x, bool is_target, const RowTerms<A>& r, A cap) {
  A dc_dx = A(1);
  const A c = cap > A(0) ? softcap<A>(x, cap, &dc_dx) : x;
  A g = grad_of(c, r);
  if (is_target) g += r.at_target;
  return cap > A(0) ? g * dc_dx : g;
}

// Writes the gradient of columns [0, n) of a row; t_local is the target's column or outside.
// VEC: whole vectors, then the columns of a last, partial vector one by one.
template <class T, int THREADS, bool VEC>
__device__ __forceinline__ void write_grad(const T* x_row, T* g_row, int64_t n, int64_t t_local,
                                           const RowTerms<typename Elem<T>::Acc>& r, typename Elem<T>::Acc cap) {
  using A = typename Elem<T>::Acc;
  constexpr int kVec = Elem<T>::kVec;
  int64_t scalar_from = 0;
  if constexpr (VEC) {
    scalar_from = n / kVec * kVec;
    const uint4* xv = reinterpret_cast<const uint4*>(x_row);
    uint4* gv = reinterpret_cast<uint4*>(g_row);
    for (int64_t v = threadIdx.x; v < n / kVec; v += THREADS) {
      A x[kVec];
      unpack<T>(xv[v], x);
      const int64_t k = t_local - v * kVec;
      if (cap > A(0)) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) x[i] = grad_of_logit(x[i], i == k, r, cap);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) x[i] = grad_of(x[i], r);
        if (static_cast<uint64_t>(k) < static_cast<uint64_t>(kVec)) {
#pragma unroll
          for (int i = 0; i < kVec; ++i)
            if (i == k) x[i] += r.at_target;
        }
      }
      gv[v] = pack<T>(x);
    }
  }
  for (int64_t j = scalar_from + threadIdx.x; j < n; j += THREADS)
    g_row[j] = from_acc<T>(grad_of_logit(to_acc(x_row[j]), j == t_local, r, cap));
}

// Zeros columns [from, to) of a gradient row (an ignored row, or the padding past the real
// classes). VEC: the row is 16-byte aligned and `to` ends a vector; columns before the first
// whole vector are written one by one.
template <class T, int THREADS, bool VEC>
__device__ __forceinline__ void zero_cols(T* g_row, int64_t from, int64_t to) {
  const T zero = from_acc<T>(typename Elem<T>::Acc(0));
  if constexpr (VEC) {
    constexpr int kVec = Elem<T>::kVec;
    const int64_t first_vec = (from + kVec - 1) / kVec;
    for (int64_t j = from + threadIdx.x; j < first_vec * kVec && j < to; j += THREADS) g_row[j] = zero;
    uint4* gv = reinterpret_cast<uint4*>(g_row);
    for (int64_t v = first_vec + threadIdx.x; v < to / kVec; v += THREADS) gv[v] = make_uint4(0, 0, 0, 0);
  } else {
    for (int64_t j = from + threadIdx.x; j < to; j += THREADS) g_row[j] = zero;
  }
}

template <class T>
struct RowArgs {
  using A = typename Elem<T>::Acc;
  const T* logits;
  T* grad;
  const void* targets;
  A* row_loss;
  A* lse;
  A* z_row;
  int* bad_target;
  const A* grad_scale;
  const A* gathered;  // finish: [P, rows, 4]
  A* stats;           // local_stats: [rows, 4]
  int64_t rows, vocab_local, vocab_global, vocab_offset, ignore_index;
  int64_t classes;      // V: global columns >= classes are padding; targets must lie below it
  int64_t valid_local;  // this shard's leading real-class columns (the rest of a row is padding)
  int ranks;
  A smoothing, z;
  A cap;  // logit soft-cap; 0: off
};

enum class RowKernel { fused, local_stats, finish };

template <RowKernel K, class T, class Tgt, int THREADS, bool VEC>
__global__ void __launch_bounds__(THREADS) rowwise_kernel(const RowArgs<T> a) {
  using A = typename Elem<T>::Acc;
  __shared__ Stats<A> scratch[THREADS / 32 + 1];
  const Tgt* targets = static_cast<const Tgt*>(a.targets);
  const A scale = (K != RowKernel::local_stats && a.grad) ? *a.grad_scale : A(0);
  for (int64_t row = blockIdx.x; row < a.rows; row += gridDim.x) {
    const int64_t target = static_cast<int64_t>(targets[row]);
    const T* x_row = a.logits + row * a.vocab_local;
    T* g_row = a.grad ? a.grad + row * a.vocab_local : nullptr;
    const int64_t t_local = target - a.vocab_offset;
    const bool owns_target = t_local >= 0 && t_local < a.valid_local;
    const bool ignored = target == a.ignore_index;
    if (ignored || target < 0 || target >= a.classes) {  // as in the fast kernel
      if constexpr (K == RowKernel::local_stats) {
        if (threadIdx.x == 0)
          for (int c = 0; c < 4; ++c) a.stats[row * 4 + c] = A(0);
      } else {
        if (g_row) zero_cols<T, THREADS, VEC>(g_row, 0, a.vocab_local);
        if (threadIdx.x == 0) {
          a.row_loss[row] = a.lse[row] = a.z_row[row] = ignored ? A(0) : std::numeric_limits<A>::quiet_NaN();
          if (!ignored) *a.bad_target = 1;
        }
      }
      continue;
    }

    Stats<A> st;
    if constexpr (K == RowKernel::finish) {
      // Combine the ranks' statistics in rank order (the same result on every rank).
      st = empty_stats<A>();
      for (int r = 0; r < a.ranks; ++r) {
        const A* g = a.gathered + (static_cast<int64_t>(r) * a.rows + row) * 4;
        st = combine(st, Stats<A>{g[0], g[1], g[3], g[2]});
      }
    } else {
      st = thread_stats<T, THREADS, VEC>(x_row, a.valid_local, a.cap);  // padding: never read
      if (threadIdx.x == 0 && owns_target) st.xy = capped(to_acc(x_row[t_local]), a.cap);
      st = block_reduce<THREADS>(st, scratch);
    }

    if constexpr (K == RowKernel::local_stats) {
      if (threadIdx.x == 0) {
        A* out = a.stats + row * 4;
        out[0] = st.m, out[1] = st.d, out[2] = st.xy, out[3] = st.s;
      }
    } else {
      const RowTerms<A> r = row_terms<A>(st, static_cast<A>(a.classes), a.smoothing, a.z, scale);
      if (threadIdx.x == 0) {
        a.row_loss[row] = r.row_loss;
        a.lse[row] = r.lse;
        a.z_row[row] = r.z_row;
      }
      if (g_row) {
        write_grad<T, THREADS, VEC>(x_row, g_row, a.valid_local, owns_target ? t_local : -1, r, a.cap);
        zero_cols<T, THREADS, VEC>(g_row, a.valid_local, a.vocab_local);
      }
    }
    __syncthreads();  // scratch reuse
  }
}

// ------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  try {
    return std::stoi(v);
  } catch (const std::exception&) {
    ZT_FAIL("environment variable ", name, "='", v, "' is not an integer");
  }
}

bool force_rowwise() {
  const char* v = std::getenv("ZT_XENT_KERNEL");
  if (!v || !*v || std::strcmp(v, "auto") == 0 || std::strcmp(v, "fused") == 0) return false;
  ZT_CHECK(std::strcmp(v, "rowwise") == 0, "ZT_XENT_KERNEL='", v, "': expected auto, fused or rowwise");
  return true;
}

void check_cuda_tensor(const Tensor& t, const char* what, Device device) {
  ZT_CHECK(t.defined(), "cross_entropy (cuda): ", what, " is undefined");
  ZT_CHECK(t.device() == device, "cross_entropy (cuda): ", what, " is on ", t.device().str(), ", expected ",
           device.str());
  ZT_CHECK(t.is_contiguous(), "cross_entropy (cuda): ", what, " must be contiguous");
}

void check_row_outputs(const Tensor& logits, const Outputs& out, int64_t rows) {
  const DType acc = cuda::acc_dtype(logits.dtype());
  const Device dev = logits.device();
  for (auto [t, name] : {std::pair{&out.row_loss, "row_loss"}, {&out.lse, "lse"}, {&out.z_row, "z_row"}}) {
    check_cuda_tensor(*t, name, dev);
    ZT_CHECK(t->numel() == rows && t->dtype() == acc, "cross_entropy (cuda): ", name, " must be [", rows, "] ",
             dtype_name(acc), ", got ", shape_str(t->shape()), " ", dtype_name(t->dtype()));
  }
  ZT_CHECK(out.bad_target, "cross_entropy (cuda): bad_target is null (the kernels report bad targets there)");
  if (out.grad.defined()) {
    check_cuda_tensor(out.grad, "grad", dev);
    ZT_CHECK(out.grad.shape() == logits.shape() && out.grad.dtype() == logits.dtype(),
             "cross_entropy (cuda): grad must match the logits, got ", shape_str(out.grad.shape()), " ",
             dtype_name(out.grad.dtype()));
    check_cuda_tensor(out.grad_scale, "grad_scale", dev);
    ZT_CHECK(out.grad_scale.numel() == 1 && out.grad_scale.dtype() == acc, "cross_entropy (cuda): grad_scale must be a ",
             dtype_name(acc), " scalar");
  }
}

void check_inputs(const Tensor& logits, const Tensor& targets, const Params& p) {
  check_cuda_tensor(logits, "logits", logits.device());
  ZT_CHECK(logits.device().is_cuda(), "cross_entropy (cuda): logits on ", logits.device().str());
  check_cuda_tensor(targets, "targets", logits.device());
  ZT_CHECK(logits.dim() == 2 && logits.size(0) == p.rows && logits.size(1) == p.vocab_local,
           "cross_entropy (cuda): logits ", shape_str(logits.shape()), " do not match rows ", p.rows, " x vocab ",
           p.vocab_local);
  ZT_CHECK(targets.numel() == p.rows && (targets.dtype() == DType::i32 || targets.dtype() == DType::i64),
           "cross_entropy (cuda): targets must be [", p.rows, "] i32/i64, got ", shape_str(targets.shape()), " ",
           dtype_name(targets.dtype()));
  ZT_CHECK(logits.dtype() == DType::f32 || logits.dtype() == DType::bf16 || logits.dtype() == DType::f64,
           "cross_entropy (cuda): logits dtype ", dtype_name(logits.dtype()), " (expected f32, bf16 or f64)");
}


// Grid of a row-per-CTA kernel: enough CTAs to fill the GPU, at most one per row.
unsigned rowwise_grid(int64_t rows, int device) { return cuda::capped_grid(rows, device, 8); }

template <RowKernel K, class T, class Tgt>
void launch_rowwise(const RowArgs<T>& args, bool vec, int device) {
  constexpr int kThreads = 256;
  const unsigned grid = rowwise_grid(args.rows, device);
  auto kernel = vec ? rowwise_kernel<K, T, Tgt, kThreads, true> : rowwise_kernel<K, T, Tgt, kThreads, false>;
  kernel<<<grid, kThreads, 0, cuda::current_stream()>>>(args);
  ZT_CUDA_CHECK_LAUNCH();
}

template <class T>
bool rows_vectorizable(const Tensor& logits, const Tensor& grad) {
  const size_t row_bytes = static_cast<size_t>(logits.size(1)) * sizeof(T);
  return row_bytes % 16 == 0 && aligned16(logits.raw_data()) && (!grad.defined() || aligned16(grad.raw_data()));
}

template <class T>
RowArgs<typename cuda::device_type<T>::type> row_args(const Tensor& logits, const Tensor& targets, const Params& p) {
  using D = typename cuda::device_type<T>::type;
  using A = typename Elem<D>::Acc;
  RowArgs<D> a{};
  a.logits = static_cast<const D*>(logits.raw_data());
  a.targets = targets.raw_data();
  a.rows = p.rows;
  a.vocab_local = p.vocab_local;
  a.vocab_global = p.vocab_global;
  a.vocab_offset = p.vocab_offset;
  a.classes = p.classes();
  a.valid_local = p.valid_local();
  a.ignore_index = p.ignore_index;
  a.smoothing = static_cast<A>(p.label_smoothing);
  a.z = static_cast<A>(p.z_loss_weight);
  a.cap = static_cast<A>(p.logit_softcap);
  return a;
}

template <class D>
void set_outputs(RowArgs<D>& a, Outputs& out) {
  using A = typename Elem<D>::Acc;
  a.row_loss = static_cast<A*>(out.row_loss.raw_data());
  a.lse = static_cast<A*>(out.lse.raw_data());
  a.z_row = static_cast<A*>(out.z_row.raw_data());
  a.bad_target = out.bad_target;
  if (out.grad.defined()) {
    a.grad = static_cast<D*>(out.grad.raw_data());
    a.grad_scale = static_cast<const A*>(out.grad_scale.raw_data());
  }
}

// ---- fast path configuration ----

struct FastConfig {
  int cluster = 0;  // 0: the fast path does not apply
  int threads = 256;
  int stages = 1;
  int slice_vecs = 0;
  bool push = true;
};

// The cluster size, from sweeps on an H200 (docs/notes/xent_cuda.md): a row that fits in one
// CTA's slice of <= 112 KiB takes no cluster (two CTAs per SM, no exchange); a longer row is
// split into slices of <= 64 KiB over at most 6 CTAs (three or four CTAs per SM, each in a
// different phase), else into slices of <= 112 KiB over at most 8. Rows under 4 KiB, or too
// long even for that, take the row-per-CTA kernel.
constexpr size_t kWholeRowSlice = 112 * 1024;
constexpr size_t kSplitSlice = 64 * 1024;
constexpr int kMaxSplitCluster = 6;
constexpr size_t kMinFastRow = 4 * 1024;

int pick_cluster(int64_t row_vecs) {
  auto slice_bytes = [&](int c) { return static_cast<size_t>((row_vecs + c - 1) / c) * 16; };
  if (slice_bytes(1) <= kWholeRowSlice) return 1;
  for (int c = 2; c <= kMaxSplitCluster; ++c)
    if (slice_bytes(c) <= kSplitSlice) return c;
  for (int c = 2; c <= kMaxCluster; ++c)
    if (slice_bytes(c) <= kWholeRowSlice) return c;
  return 0;
}

// classes: the real-class prefix of each row, the part that is loaded and sliced (the row
// itself, padding included, must be whole vectors).
template <class T>
FastConfig fast_config(const Tensor& logits, const Tensor& grad, int64_t classes) {
  FastConfig c;
  if constexpr (std::is_same_v<T, double>) {
    return c;
  } else {
    const size_t row_bytes = static_cast<size_t>(classes) * sizeof(T);
    if (force_rowwise() || !rows_vectorizable<T>(logits, grad) || row_bytes < kMinFastRow) return c;
    const int64_t row_vecs = static_cast<int64_t>((row_bytes + 15) / 16);
    int cluster = env_int("ZT_XENT_CLUSTER", 0);
    if (cluster == 0) {
      cluster = pick_cluster(row_vecs);
      if (cluster == 0) return c;  // a row over 896 KiB: the fallback re-reads it from L2
    }
    ZT_CHECK(cluster >= 1 && cluster <= kMaxCluster, "ZT_XENT_CLUSTER=", cluster, ": expected 1..", kMaxCluster);
    c.threads = env_int("ZT_XENT_THREADS", 256);
    ZT_CHECK(c.threads == 256 || c.threads == 512, "ZT_XENT_THREADS=", c.threads, ": expected 256 or 512");
    c.stages = env_int("ZT_XENT_STAGES", 1);
    ZT_CHECK(c.stages >= 1 && c.stages <= kMaxStages, "ZT_XENT_STAGES=", c.stages, ": expected 1..", kMaxStages);
    const char* ex = std::getenv("ZT_XENT_EXCHANGE");
    const std::string exchange = ex && *ex ? ex : "push";
    ZT_CHECK(exchange == "barrier" || exchange == "push", "ZT_XENT_EXCHANGE='", exchange,
             "': expected barrier or push");
    c.push = exchange == "push";
    c.slice_vecs = static_cast<int>((row_vecs + cluster - 1) / cluster);
    if (static_cast<size_t>(c.slice_vecs) * 16 > 200 * 1024) return c;  // forced cluster too small to fit
    c.cluster = cluster;
    return c;
  }
}

// Largest grid (in clusters) that is resident at once, per kernel and configuration.
int max_active_clusters(const void* kernel, const cudaLaunchConfig_t& cfg, int device) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, size_t, int, int>, int> cache;
  const auto key = std::make_tuple(kernel, static_cast<int>(cfg.blockDim.x), cfg.dynamicSmemBytes,
                                   static_cast<int>(cfg.attrs[0].val.clusterDim.x), device);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  ZT_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&n, kernel, &cfg));
  ZT_CHECK(n > 0, "cross_entropy (cuda): no cluster of ", cfg.attrs[0].val.clusterDim.x, " CTAs with ",
           cfg.dynamicSmemBytes, " bytes of shared memory fits on device ", device);
  cache.emplace(key, n);
  return n;
}

// CTAs of a plain launch resident per SM, cached like max_active_clusters.
int max_active_blocks(const void* kernel, int threads, size_t smem, int device) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, size_t, int>, int> cache;
  const auto key = std::make_tuple(kernel, threads, smem, device);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  ZT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem));
  ZT_CHECK(n > 0, "cross_entropy (cuda): no CTA of ", threads, " threads with ", smem,
           " bytes of shared memory fits on device ", device);
  cache.emplace(key, n);
  return n;
}

template <class T, class Tgt, int THREADS>
void launch_fast(const FusedArgs& args, const FastConfig& c, int device) {
  auto kernel = fused_cluster_kernel<T, Tgt, THREADS>;
  {  // once per device: allow this kernel the device's whole opt-in shared memory
    static std::mutex mu;
    static std::set<int> done;
    std::lock_guard<std::mutex> lock(mu);
    if (done.insert(device).second) {
      int optin = 0;
      ZT_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
      ZT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
    }
  }
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(c.cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg{};
  cfg.blockDim = dim3(THREADS);
  cfg.dynamicSmemBytes = FastLayout<THREADS>::bytes(c.slice_vecs);
  cfg.stream = cuda::current_stream();
  int64_t resident = 0;
  if (c.cluster == 1) {  // a plain launch: no cluster attribute
    resident = static_cast<int64_t>(max_active_blocks(reinterpret_cast<const void*>(kernel), THREADS,
                                                      cfg.dynamicSmemBytes, device)) *
               cuda::multiprocessor_count(device);
  } else {
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cfg.gridDim = dim3(static_cast<unsigned>(c.cluster));  // for the occupancy query
    resident = max_active_clusters(reinterpret_cast<const void*>(kernel), cfg, device);
  }
  const int64_t clusters = std::min<int64_t>(args.rows, resident);
  cfg.gridDim = dim3(static_cast<unsigned>(clusters * c.cluster));
  ZT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, args));
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Interface
// ------------------------------------------------------------------------------------------

void count_rows_cuda(const Tensor& targets, int64_t ignore_index, bool mean, Tensor& count, Tensor& grad_scale) {
  const Device dev = targets.device();
  ZT_CHECK(dev.is_cuda(), "count_rows_cuda: targets on ", dev.str());
  check_cuda_tensor(targets, "targets", dev);
  check_cuda_tensor(count, "count", dev);
  check_cuda_tensor(grad_scale, "grad_scale", dev);
  ZT_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64, "count_rows_cuda: targets dtype ",
           dtype_name(targets.dtype()));
  ZT_CHECK(count.dtype() == DType::i64 && count.numel() == 1, "count_rows_cuda: count must be a scalar i64");
  ZT_CHECK((grad_scale.dtype() == DType::f32 || grad_scale.dtype() == DType::f64) && grad_scale.numel() == 1,
           "count_rows_cuda: grad_scale must be a scalar f32/f64");
  cuda::set_device(dev.index);
  dispatch_targets(targets.dtype(), [&](auto ttag) {
    using Tgt = decltype(ttag);
    auto launch = [&](auto stag) {
      using S = decltype(stag);
      count_rows_kernel<Tgt, S><<<1, kCountThreads, 0, cuda::current_stream()>>>(
          static_cast<const Tgt*>(targets.raw_data()), targets.numel(), ignore_index, mean,
          static_cast<int64_t*>(count.raw_data()), static_cast<S*>(grad_scale.raw_data()));
    };
    if (grad_scale.dtype() == DType::f32) launch(float{});
    else launch(double{});
  });
  ZT_CUDA_CHECK_LAUNCH();
}

void fused_cuda(const Tensor& logits, const Tensor& targets, const Params& p, Outputs& out) {
  check_inputs(logits, targets, p);
  ZT_CHECK(p.vocab_local == p.vocab_global && p.vocab_offset == 0,
           "fused_cuda: one rank holds the whole vocabulary (local ", p.vocab_local, ", global ", p.vocab_global, ")");
  check_row_outputs(logits, out, p.rows);
  if (p.rows == 0) return;
  const int device = logits.device().index;
  cuda::set_device(device);
  dispatch_types(logits, targets, "cross_entropy (cuda)", [&](auto ltag, auto ttag) {
    using T = decltype(ltag);
    using Tgt = decltype(ttag);
    using D = typename cuda::device_type<T>::type;
    const FastConfig c = fast_config<T>(logits, out.grad, p.classes());
    if constexpr (!std::is_same_v<T, double>) {
      // Soft-capped logits take the row-per-CTA kernel (the cluster kernel has no cap yet).
      if (c.cluster > 0 && p.logit_softcap == 0) {
        FusedArgs a{};
        a.logits = logits.raw_data();
        a.grad = out.grad.defined() ? out.grad.raw_data() : nullptr;
        a.targets = targets.raw_data();
        a.row_loss = static_cast<float*>(out.row_loss.raw_data());
        a.lse = static_cast<float*>(out.lse.raw_data());
        a.z_row = static_cast<float*>(out.z_row.raw_data());
        a.bad_target = out.bad_target;
        a.grad_scale = out.grad.defined() ? static_cast<const float*>(out.grad_scale.raw_data()) : nullptr;
        a.rows = p.rows;
        a.width = p.vocab_local;
        a.classes = p.classes();
        a.ignore_index = p.ignore_index;
        a.smoothing = static_cast<float>(p.label_smoothing);
        a.z = static_cast<float>(p.z_loss_weight);
        a.row_vecs = p.vocab_local * static_cast<int64_t>(sizeof(T)) / 16;
        a.slice_vecs = c.slice_vecs;
        a.stages = c.stages;
        a.push = c.push;
        if (c.threads == 512) launch_fast<D, Tgt, 512>(a, c, device);
        else launch_fast<D, Tgt, 256>(a, c, device);
        return;
      }
    }
    RowArgs<D> a = row_args<T>(logits, targets, p);
    set_outputs(a, out);
    launch_rowwise<RowKernel::fused, D, Tgt>(a, rows_vectorizable<T>(logits, out.grad), device);
  });
}

void local_stats_cuda(const Tensor& logits, const Tensor& targets, const Params& p, Tensor& stats) {
  check_inputs(logits, targets, p);
  const DType acc = cuda::acc_dtype(logits.dtype());
  check_cuda_tensor(stats, "stats", logits.device());
  ZT_CHECK(stats.numel() == p.rows * 4 && stats.dtype() == acc, "local_stats_cuda: stats must be [", p.rows, ", 4] ",
           dtype_name(acc), ", got ", shape_str(stats.shape()), " ", dtype_name(stats.dtype()));
  if (p.rows == 0) return;
  const int device = logits.device().index;
  cuda::set_device(device);
  dispatch_types(logits, targets, "cross_entropy (cuda)", [&](auto ltag, auto ttag) {
    using T = decltype(ltag);
    using Tgt = decltype(ttag);
    using D = typename cuda::device_type<T>::type;
    using A = typename Elem<D>::Acc;
    RowArgs<D> a = row_args<T>(logits, targets, p);
    a.stats = static_cast<A*>(stats.raw_data());
    launch_rowwise<RowKernel::local_stats, D, Tgt>(a, rows_vectorizable<T>(logits, Tensor()), device);
  });
}

void finish_cuda(const Tensor& logits, const Tensor& targets, const Tensor& gathered_stats, const Params& p,
                 Outputs& out) {
  check_inputs(logits, targets, p);
  check_row_outputs(logits, out, p.rows);
  const DType acc = cuda::acc_dtype(logits.dtype());
  check_cuda_tensor(gathered_stats, "gathered stats", logits.device());
  ZT_CHECK(gathered_stats.dim() == 3 && gathered_stats.size(1) == p.rows && gathered_stats.size(2) == 4 &&
               gathered_stats.dtype() == acc,
           "finish_cuda: gathered stats must be [P, ", p.rows, ", 4] ", dtype_name(acc), ", got ",
           shape_str(gathered_stats.shape()), " ", dtype_name(gathered_stats.dtype()));
  if (p.rows == 0) return;
  const int device = logits.device().index;
  cuda::set_device(device);
  dispatch_types(logits, targets, "cross_entropy (cuda)", [&](auto ltag, auto ttag) {
    using T = decltype(ltag);
    using Tgt = decltype(ttag);
    using D = typename cuda::device_type<T>::type;
    using A = typename Elem<D>::Acc;
    RowArgs<D> a = row_args<T>(logits, targets, p);
    set_outputs(a, out);
    a.gathered = static_cast<const A*>(gathered_stats.raw_data());
    a.ranks = static_cast<int>(gathered_stats.size(0));
    launch_rowwise<RowKernel::finish, D, Tgt>(a, rows_vectorizable<T>(logits, out.grad), device);
  });
}

void reduce_rows_cuda(const Tensor& row_loss, const Tensor& z_row, const Tensor& grad_scale, Tensor& loss,
                      Tensor& ce_sum, Tensor& z_sum) {
  const Device dev = row_loss.device();
  ZT_CHECK(dev.is_cuda(), "reduce_rows_cuda: row_loss on ", dev.str());
  const DType acc = row_loss.dtype();
  ZT_CHECK(acc == DType::f32 || acc == DType::f64, "reduce_rows_cuda: row_loss dtype ", dtype_name(acc));
  for (auto [t, name] : {std::pair{&row_loss, "row_loss"}, {&z_row, "z_row"}}) {
    check_cuda_tensor(*t, name, dev);
    ZT_CHECK(t->dtype() == acc && t->numel() == row_loss.numel(), "reduce_rows_cuda: ", name, " must be [",
             row_loss.numel(), "] ", dtype_name(acc));
  }
  for (auto [t, name] : {std::pair{&ce_sum, "ce_sum"}, {&z_sum, "z_sum"}}) {
    check_cuda_tensor(*t, name, dev);
    ZT_CHECK(t->dtype() == acc && t->numel() == 1, "reduce_rows_cuda: ", name, " must be a scalar ",
             dtype_name(acc));
  }
  if (loss.defined()) {
    check_cuda_tensor(loss, "loss", dev);
    check_cuda_tensor(grad_scale, "grad_scale", dev);
    ZT_CHECK(loss.dtype() == acc && loss.numel() == 1 && grad_scale.dtype() == acc && grad_scale.numel() == 1,
             "reduce_rows_cuda: loss and grad_scale must be scalars of ", dtype_name(acc));
  }
  cuda::set_device(dev.index);
  auto launch = [&](auto tag) {
    using A = decltype(tag);
    reduce_rows_kernel<A><<<1, kCountThreads, 0, cuda::current_stream()>>>(
        static_cast<const A*>(row_loss.raw_data()), static_cast<const A*>(z_row.raw_data()), row_loss.numel(),
        loss.defined() ? static_cast<const A*>(grad_scale.raw_data()) : nullptr,
        loss.defined() ? static_cast<A*>(loss.raw_data()) : nullptr, static_cast<A*>(ce_sum.raw_data()),
        static_cast<A*>(z_sum.raw_data()));
  };
  if (acc == DType::f32) launch(float{});
  else launch(double{});
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::ops::xent
