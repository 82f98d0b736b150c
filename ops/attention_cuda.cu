// CUDA side of ops/attention.h, the simplest correct version: per (batch, head) the scores
// S = Q K^T / sqrt(D) come from one strided-batched cuBLASLt product into an f32 buffer
// [B H, T, T] (f64 for f64), a masked-softmax kernel turns them into probabilities P (in the
// operands' dtype, as the second product reads them) and the row log-sum-exp, and
// O = P V is a second product. Backward recomputes P from the saved log-sum-exp:
//   dV = P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO o O)) / sqrt(D),  dQ = dS K,  dK = dS^T Q.
// The products compute the masked upper triangle too (half their FLOPs are wasted) and the
// T x T buffers go through memory: a fused flash-attention kernel is the next step.
//
// Grouped-query heads (k, v with Hkv heads, H / Hkv = G query heads each): the G query heads
// of one key/value head are consecutive in [B, H, T, D], so the products are batched over the
// B Hkv key/value heads with the group's G T query rows stacked as one [G T, D] operand. Then
// S = Q K^T is [G T, T] per batch (row r is position r % T, as the softmax kernels read it)
// and dV = P^T dO, dK = dS^T Q contract over all G T rows: the sums over the group come out of
// the products themselves, with no copies of k and v. G = 1 is the plain per-head batching.
#include <cmath>
#include <cstdlib>

#include "framework/cuda/blas.h"
#include "ops/attention_kernels.h"
#include "ops/cuda_compute.cuh"

namespace zt::ops {

namespace {

using namespace gpu;

constexpr int kRowsPerBlock = 8;  // one warp per row

template <class A>
__device__ __forceinline__ A exp_of(A v) {
  if constexpr (std::is_same_v<A, double>) return exp(v);
  else return expf(v);
}
template <class A>
__device__ __forceinline__ A log_of(A v) {
  if constexpr (std::is_same_v<A, double>) return log(v);
  else return logf(v);
}

// Row r of the [BH T, T] scores is query position i = r % T, which sees keys 0..i.
template <class T>
__global__ void causal_softmax_kernel(const acc_t<T>* S, T* P, acc_t<T>* lse, int64_t rows, int64_t T_len) {
  using A = acc_t<T>;
  const int64_t r = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const int64_t visible = r % T_len + 1;
  const A* s = S + r * T_len;
  T* p = P + r * T_len;
  A m = -INFINITY;
  for (int64_t j = lane; j < visible; j += 32) m = max(m, s[j]);
  m = warp_max(m);
  A d = 0;
  for (int64_t j = lane; j < visible; j += 32) d += exp_of(s[j] - m);
  const A l = m + log_of(warp_sum(d));
  for (int64_t j = lane; j < T_len; j += 32) store(p, j, j < visible ? exp_of(s[j] - l) : A(0));
  if (lane == 0) lse[r] = l;
}

template <class T>
__global__ void recompute_probs_kernel(const acc_t<T>* S, const acc_t<T>* lse, T* P, int64_t rows, int64_t T_len) {
  using A = acc_t<T>;
  const int64_t r = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const int64_t visible = r % T_len + 1;
  const A l = lse[r];
  const A* s = S + r * T_len;
  T* p = P + r * T_len;
  for (int64_t j = lane; j < T_len; j += 32) store(p, j, j < visible ? exp_of(s[j] - l) : A(0));
}

// delta[r] = sum_d dO[r, d] O[r, d]
template <class T>
__global__ void row_dot_kernel(const T* g, const T* o, acc_t<T>* delta, int64_t rows, int64_t D) {
  using A = acc_t<T>;
  const int64_t r = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  A acc = 0;
  for (int64_t j = lane; j < D; j += 32) acc += load<A>(g, r * D + j) * load<A>(o, r * D + j);
  acc = warp_sum(acc);
  if (lane == 0) delta[r] = acc;
}

// dS = P (dP - delta) scale, written over P (zero where P is: the masked part).
template <class T>
__global__ void score_grad_kernel(const acc_t<T>* dP, const acc_t<T>* delta, T* P, int64_t rows, int64_t T_len,
                                  acc_t<T> scale) {
  using A = acc_t<T>;
  const int64_t r = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const A dl = delta[r];
  const A* dp = dP + r * T_len;
  T* p = P + r * T_len;
  for (int64_t j = lane; j < T_len; j += 32) store(p, j, load<A>(p, j) * (dp[j] - dl) * scale);
}

using Dims = AttentionDims;

// One strided-batched product over the heads: C[h] = alpha op(A[h]) op(B[h]).
void batched(const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, int64_t heads, int64_t M, int64_t N,
             int64_t K, double alpha, int64_t stride_a, int64_t stride_b) {
  cuda::GemmArgs g;
  g.batch = heads;
  g.M = M;
  g.N = N;
  g.K = K;
  g.trans_a = ta;
  g.trans_b = tb;
  g.A = a.raw_data();
  g.lda = ta ? M : K;
  g.stride_a = stride_a;
  g.B = b.raw_data();
  g.ldb = tb ? K : N;
  g.stride_b = stride_b;
  g.C = c.raw_data();
  g.ldc = N;
  g.stride_c = M * N;
  g.ab_dtype = a.dtype();
  g.c_dtype = c.dtype();
  g.alpha = alpha;
  cuda::gemm(c.device().index, g);
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

namespace {

// Contiguous [B, H, T, D] operands for the fused kernels (ops/flash_attention_cuda.cu).
FlashArgs contiguous_flash_args(const Tensor& q, const Tensor& k, const Tensor& v) {
  FlashArgs a;
  a.q = q.raw_data();
  a.k = k.raw_data();
  a.v = v.raw_data();
  a.B = q.shape()[0];
  a.H = q.shape()[1];
  a.T = q.shape()[2];
  a.D = q.shape()[3];
  a.Hkv = a.H;  // takes_flash: k and v have q's shape
  a.in = {a.H * a.T * a.D, a.T * a.D, a.D};
  return a;
}

bool aligned16(const Tensor& t) { return gpu::aligned16(t.raw_data()); }

// Our flash kernels have no grouped heads: k and v must have q's head count.
bool takes_flash(const Tensor& q, const Tensor& k, const Tensor& v, int64_t D) {
  return flash_attention_enabled() && flash_attention_supported(q.dtype(), D) && q.shape() == k.shape() &&
         aligned16(q) && aligned16(k) && aligned16(v);
}

}  // namespace

Tensor attention_forward_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, Tensor& lse) {
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const Dims d(q, k);
  const DType acc = acc_dtype(q.dtype());
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  lse = Tensor::empty({q.shape()[0], q.shape()[1], d.T}, acc, q.device());
  if (d.heads * d.T == 0) return out;
  if (takes_flash(q, k, v, d.D)) {
    const FlashArgs a = contiguous_flash_args(q, k, v);
    flash_attention_forward_cuda(a, out.raw_data(), a.in, static_cast<float*>(lse.raw_data()), q.device().index);
    return out;
  }
  if (d.D == 0) {
    out.fill_(0.0);
    lse.fill_(0.0);  // not used: no gradient flows through an empty head dimension
    return out;
  }
  cudaStream_t s = stream_for(q);
  // Per key/value head (the products' batch): GT query rows, T keys.
  const int64_t GT = d.group * d.T, TD = d.T * d.D, GTT = GT * d.T, GTD = GT * d.D, rows = d.heads * d.T;
  Tensor scores = Tensor::empty({d.kv_heads, GT, d.T}, acc, q.device());
  Tensor probs = Tensor::empty({d.kv_heads, GT, d.T}, q.dtype(), q.device());
  {
    OpRange range("attention.qk");
    batched(q, false, k, true, scores, d.kv_heads, GT, d.T, d.D, 1.0 / std::sqrt(static_cast<double>(d.D)), GTD,
            TD);
  }
  dispatch_device_float(q.dtype(), "causal_attention", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    OpRange range("attention.softmax");
    causal_softmax_kernel<T><<<row_blocks(rows), kRowsPerBlock * 32, 0, s>>>(
        static_cast<const A*>(scores.raw_data()), static_cast<T*>(probs.raw_data()), static_cast<A*>(lse.raw_data()),
        rows, d.T);
  });
  ZT_CUDA_CHECK_LAUNCH();
  {
    OpRange range("attention.pv");
    batched(probs, false, v, false, out, d.kv_heads, GT, d.D, d.T, 1.0, GTT, TD);
  }
  return out;
}

void attention_backward_cuda(const Tensor& grad, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                             const Tensor& out_in, const Tensor& lse, Tensor* dq, Tensor* dk, Tensor* dv) {
  const Tensor g = grad.contiguous(), q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(),
               o = out_in.contiguous();
  const Dims d(q, k);
  const DType acc = acc_dtype(q.dtype());
  Tensor dq_c = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor dk_c = Tensor::empty(k.shape(), q.dtype(), q.device());
  Tensor dv_c = Tensor::empty(k.shape(), q.dtype(), q.device());
  auto finish = [&] {
    if (dq) *dq = dq_c;
    if (dk) *dk = dk_c;
    if (dv) *dv = dv_c;
  };
  if (d.heads * d.T * d.D == 0) {
    for (Tensor* t : {&dq_c, &dk_c, &dv_c}) t->fill_(0.0);
    finish();
    return;
  }
  if (takes_flash(q, k, v, d.D) && aligned16(g) && aligned16(o)) {
    const FlashArgs a = contiguous_flash_args(q, k, v);
    flash_attention_backward_cuda(a, o.raw_data(), g.raw_data(), a.in, static_cast<const float*>(lse.raw_data()),
                                  dq_c.raw_data(), dk_c.raw_data(), dv_c.raw_data(), a.in, q.device().index);
    finish();
    return;
  }
  cudaStream_t s = stream_for(q);
  // Per key/value head (the products' batch): GT query rows, T keys (see the top of the file).
  const int64_t GT = d.group * d.T, TD = d.T * d.D, GTT = GT * d.T, GTD = GT * d.D, rows = d.heads * d.T;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
  Tensor scores = Tensor::empty({d.kv_heads, GT, d.T}, acc, q.device());       // S, then dP
  Tensor probs = Tensor::empty({d.kv_heads, GT, d.T}, q.dtype(), q.device());  // P, then dS
  Tensor delta = Tensor::empty({rows}, acc, q.device());
  {
    OpRange range("attention.qk");
    batched(q, false, k, true, scores, d.kv_heads, GT, d.T, d.D, scale, GTD, TD);
  }
  dispatch_device_float(q.dtype(), "causal_attention", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    OpRange range("attention.probs_delta");
    recompute_probs_kernel<T><<<row_blocks(rows), kRowsPerBlock * 32, 0, s>>>(
        static_cast<const A*>(scores.raw_data()), static_cast<const A*>(lse.raw_data()),
        static_cast<T*>(probs.raw_data()), rows, d.T);
    ZT_CUDA_CHECK_LAUNCH();
    row_dot_kernel<T><<<row_blocks(rows), kRowsPerBlock * 32, 0, s>>>(
        static_cast<const T*>(g.raw_data()), static_cast<const T*>(o.raw_data()), static_cast<A*>(delta.raw_data()),
        rows, d.D);
    ZT_CUDA_CHECK_LAUNCH();
  });
  // ZT_ATTN_BWD_TRANSPOSE=1 (an experiment): P^T and dS^T as explicit copies and plain
  // products, instead of cuBLASLt reading P and dS transposed. Both contract over the GT rows
  // of a key/value head's group: [T, GT] [GT, D] -> [T, D].
  static const bool transpose_copy = [] {
    const char* e = std::getenv("ZT_ATTN_BWD_TRANSPOSE");
    return e && e[0] == '1';
  }();
  auto transposed_product = [&](const Tensor& a, const Tensor& b, Tensor& c, const char* name) {
    if (!transpose_copy) {
      OpRange range(name);
      batched(a, true, b, false, c, d.kv_heads, d.T, d.D, GT, 1.0, GTT, GTD);
      return;
    }
    Tensor at;
    {
      OpRange range("attention.transpose_copy");
      at = a.transpose(1, 2).contiguous();
    }
    OpRange range(name);
    batched(at, false, b, false, c, d.kv_heads, d.T, d.D, GT, 1.0, GTT, GTD);
  };
  transposed_product(probs, g, dv_c, "attention.dv");  // dV = P^T dO
  {
    OpRange range("attention.dp");
    batched(g, false, v, true, scores, d.kv_heads, GT, d.T, d.D, 1.0, GTD, TD);  // dP = dO V^T
  }
  dispatch_device_float(q.dtype(), "causal_attention", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    OpRange range("attention.ds");
    score_grad_kernel<T><<<row_blocks(rows), kRowsPerBlock * 32, 0, s>>>(
        static_cast<const A*>(scores.raw_data()), static_cast<const A*>(delta.raw_data()),
        static_cast<T*>(probs.raw_data()), rows, d.T, static_cast<A>(scale));
    ZT_CUDA_CHECK_LAUNCH();
  });
  {
    OpRange range("attention.dq");
    batched(probs, false, k, false, dq_c, d.kv_heads, GT, d.D, d.T, 1.0, GTT, TD);  // dQ = dS K
  }
  transposed_product(probs, q, dk_c, "attention.dk");  // dK = dS^T Q
  finish();
}

}  // namespace zt::ops
