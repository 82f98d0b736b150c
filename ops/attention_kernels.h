#pragma once
// CPU kernels behind ops/attention.h (internal to ops/).
//
// Per (batch, head), query rows are taken in blocks of 64: block [r0, r1) only sees keys
// [0, r1), so S = scale Q_blk K[0:r1]^T is one GEMM over just the causal part, the masked
// softmax runs on that block, and O_blk = P V[0:r1] is a second GEMM. Only the per-row
// log-sum-exp is kept for backward (not the T x T probabilities); backward recomputes P
// from it, block by block:
//   dV += P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO o O)) scale,  dQ = dS K,  dK += dS^T Q.
// Grouped-query heads (k, v with Hkv heads): forward query head h reads key/value head
// h / (H / Hkv); backward runs one key/value head per thread, over its group's query heads in
// turn, so dK and dV sum the group's contributions without races or copies of k and v.
#include "framework/tensor.h"
#include "ops/attention.h"

namespace zt::ops {

// The shape of a causal_attention problem, q [B, H, T, D], k and v [B, Hkv, T, D]: flat query
// head h (of B H) uses flat key/value head h / group (of B Hkv), as (b H + i) / G = b Hkv + i / G.
struct AttentionDims {
  int64_t heads;     // B * H: independent problems
  int64_t kv_heads;  // B * Hkv
  int64_t group;     // G = H / Hkv: query heads per key/value head
  int64_t T, D;
  AttentionDims(const Tensor& q, const Tensor& k)
      : heads(q.shape()[0] * q.shape()[1]),
        kv_heads(k.shape()[0] * k.shape()[1]),
        group(k.shape()[1] > 0 ? q.shape()[1] / k.shape()[1] : 1),
        T(q.shape()[2]),
        D(q.shape()[3]) {}
};

// q [B, H, T, D], k and v [B, Hkv, T, D] (Hkv dividing H) -> out [B, H, T, D]; lse :=
// [B, H, T] log-sum-exp of each row's scaled, masked scores (f32 for f32/bf16, f64 for f64).
Tensor attention_forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& lse);

// Gradients of q, k, v (dk, dv [B, Hkv, T, D]) from grad of out; a null pointer skips storing
// that gradient.
void attention_backward_cpu(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                            const Tensor& lse, Tensor* dq, Tensor* dk, Tensor* dv);

// CUDA kernels (ops/attention_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
Tensor attention_forward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& lse);
void attention_backward_cuda(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                             const Tensor& lse, Tensor* dq, Tensor* dk, Tensor* dv);
#endif

// ---- fused (flash) attention on CUDA, bf16: ops/flash_attention_cuda.cu ----

// Element strides of a [B, H, T, D] view whose rows (d = 0..D-1) are contiguous: element
// (b, h, t, d) sits at b * batch + h * head + t * row + d. Contiguous [B, H, T, D] is
// {H T D, T D, D}; head h of a [B, T, H D] activation is {T H D, D, H D}.
struct AttentionLayout {
  int64_t batch = 0, head = 0, row = 0;
};

// q, k, v share one layout (three heads-views of one [B, T, (H + 2 Hkv) D] projection, or
// three contiguous [B, H, T, D] tensors). q has H heads, k and v Hkv (dividing H; query head h
// uses key/value head h / (H / Hkv)). Our flash kernels take only Hkv == H; cuDNN takes both.
struct FlashArgs {
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  AttentionLayout in;
  int64_t B = 0, H = 0, T = 0, D = 0;
  int64_t Hkv = 0;  // key/value heads: set it (= H for plain multi-head attention)
};

// Whether the fused kernels handle this dtype and head size (bf16; D = 32 or 64).
inline bool flash_attention_supported(DType dtype, int64_t D) { return dtype == DType::bf16 && (D == 32 || D == 64); }

// False when attention_backend() (ops/attention.h: ZT_ATTENTION, ZT_FLASH_ATTENTION) is
// unfused: every attention then takes the cuBLASLt products around a softmax kernel, for A/B
// timing. Defined in ops/attention.cpp.
bool flash_attention_enabled();

#ifdef ZTRAIN_WITH_CUDA
// causal_self_attention's fused path (ops/attention_fused_cuda.cpp) on x, its contiguous
// [B, T, (H + 2 Hkv) D] projection on a GPU, with H query and Hkv key/value heads of size D:
// The backend that takes the call given the first choice: cudnn if first is cudnn and cuDNN
// takes the problem, else flash if first is not unfused, Hkv == H and our kernels take it,
// else unfused.
AttentionBackend fused_attention_backend_cuda(const Tensor& x, int64_t H, int64_t Hkv, int64_t D,
                                              AttentionBackend first);
// out [B, T, H D] (merged heads) and lse [B, H, T] f32 by `backend` (cudnn or flash).
void fused_attention_forward_cuda(AttentionBackend backend, const Tensor& x, int64_t H, int64_t Hkv, Tensor& out,
                                  Tensor& lse);
// d qkv [B, T, (H + 2 Hkv) D] from the gradient of out, by the backend that ran the forward
// pass (its d k and d v parts: the Hkv heads, each summed over its group's query heads).
Tensor fused_attention_backward_cuda(AttentionBackend backend, const Tensor& qkv, int64_t H, int64_t Hkv,
                                     const Tensor& out, const Tensor& lse, const Tensor& grad);
// out (bf16, out_layout) = causal attention; lse [B, H, T] f32 (natural log). Current stream.
// a.Hkv must be a.H (a zt::Error otherwise).
void flash_attention_forward_cuda(const FlashArgs& a, void* out, const AttentionLayout& out_layout, float* lse,
                                  int device);
// dq, dk, dv (bf16, grad_layout) from dout (out_layout, like out). Every element of dq, dk, dv is written.
void flash_attention_backward_cuda(const FlashArgs& a, const void* out, const void* dout,
                                   const AttentionLayout& out_layout, const float* lse, void* dq, void* dk, void* dv,
                                   const AttentionLayout& grad_layout, int device);
#endif

}  // namespace zt::ops
