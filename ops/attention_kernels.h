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

}  // namespace zt::ops
