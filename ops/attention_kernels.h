#pragma once
// CPU kernels behind ops/attention.h (internal to ops/).
//
// Per (batch, head), query rows are taken in blocks of 64: block [r0, r1) only sees keys
// [0, r1), so S = scale Q_blk K[0:r1]^T is one GEMM over just the causal part, the masked
// softmax runs on that block, and O_blk = P V[0:r1] is a second GEMM. Only the per-row
// log-sum-exp is kept for backward (not the T x T probabilities); backward recomputes P
// from it, block by block:
//   dV += P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO o O)) scale,  dQ = dS K,  dK += dS^T Q.
#include "framework/tensor.h"
#include "ops/attention.h"

namespace zt::ops {

// q, k, v [B, H, T, D] -> out [B, H, T, D]; lse := [B, H, T] log-sum-exp of each row's
// scaled, masked scores (f32 for f32/bf16, f64 for f64).
Tensor attention_forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& lse);

// Gradients of q, k, v from grad of out; a null pointer skips storing that gradient.
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

// q, k, v share one layout (three heads-views of one [B, T, 3C] projection, or three
// contiguous [B, H, T, D] tensors).
struct FlashArgs {
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  AttentionLayout in;
  int64_t B = 0, H = 0, T = 0, D = 0;
};

// Whether the fused kernels handle this dtype and head size (bf16; D = 32 or 64).
inline bool flash_attention_supported(DType dtype, int64_t D) { return dtype == DType::bf16 && (D == 32 || D == 64); }

// False when attention_backend() (ops/attention.h: ZT_ATTENTION, ZT_FLASH_ATTENTION) is
// unfused: every attention then takes the cuBLASLt products around a softmax kernel, for A/B
// timing. Defined in ops/attention.cpp.
bool flash_attention_enabled();

#ifdef ZTRAIN_WITH_CUDA
// causal_self_attention's fused path (ops/attention_fused_cuda.cpp) on x, its contiguous
// [B, T, 3C] projection on a GPU, with H heads of size D:
// The backend that takes the call given the first choice: cudnn if first is cudnn and cuDNN
// takes the problem, else flash if first is not unfused and our kernels take it, else unfused.
AttentionBackend fused_attention_backend_cuda(const Tensor& x, int64_t H, int64_t D, AttentionBackend first);
// out [B, T, C] (merged heads) and lse [B, H, T] f32 by `backend` (cudnn or flash).
void fused_attention_forward_cuda(AttentionBackend backend, const Tensor& x, int64_t H, Tensor& out, Tensor& lse);
// d qkv [B, T, 3C] from the gradient of out, by the backend that ran the forward pass.
Tensor fused_attention_backward_cuda(AttentionBackend backend, const Tensor& qkv, int64_t H, const Tensor& out,
                                     const Tensor& lse, const Tensor& grad);
// out (bf16, out_layout) = causal attention; lse [B, H, T] f32 (natural log). Current stream.
void flash_attention_forward_cuda(const FlashArgs& a, void* out, const AttentionLayout& out_layout, float* lse,
                                  int device);
// dq, dk, dv (bf16, grad_layout) from dout (out_layout, like out). Every element of dq, dk, dv is written.
void flash_attention_backward_cuda(const FlashArgs& a, const void* out, const void* dout,
                                   const AttentionLayout& out_layout, const float* lse, void* dq, void* dk, void* dv,
                                   const AttentionLayout& grad_layout, int device);
#endif

}  // namespace zt::ops
