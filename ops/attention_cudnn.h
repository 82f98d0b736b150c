#pragma once
// Causal self-attention on cuDNN's fused flash-attention engines (internal to ops/): the
// cuDNN 9 graph API driven through its C backend descriptors (cudnn-frontend is not
// packaged here). The graphs are the operation DAGs cuDNN's runtime fusion engines match as
// "fused flash attention" forward and backward:
//
//   forward:  S = Q K^T (f32) -> S * scale -> causal mask (row >= col, else -inf)
//             -> softmax with statistics (max, exp, sum; Stats = max + log sum, f32 [B,H,T,1])
//             -> P (bf16) -> O = P V
//   backward: Delta = rowsum(dO o O); S recomputed; P = exp(S * scale - Stats), masked;
//             dV = P^T dO; dS = P (dO V^T - Delta) * scale; dK = dS^T Q; dQ = dS K
//             (accumulated in f32, then rounded)
//
// Q, K, V are read in place from the model's [B, T, (H + 2 Hkv) D] projection and dQ, dK, dV
// written in place into a gradient of that shape, through strides (FlashArgs' layout); O and
// dO have the merged-heads layout [B, T, H D]. Stats is the natural-log log-sum-exp of the
// scaled, masked scores, the same quantity the flash kernels save as `lse` ([B, H, T] f32).
//
// Grouped-query heads (Hkv < H, dividing it): K and V are described with Hkv heads and cuDNN's
// products broadcast each over its H / Hkv query heads (query head h uses key/value head
// h / (H / Hkv)); in backward, P^T dO and dS^T Q are made per query head ([B, H, T, D], virtual)
// and a reduction sums each group into dV and dK [B, Hkv, T, D], as cudnn-frontend does.
//
// Plans (operation graph, engine choice, execution plan) are built once per problem (B, T, H,
// Hkv, D, dtype, device, layouts) by cudnn_attention_supported(), forward and backward together,
// and cached, including refusals; forward/backward only look them up and execute.
#include <cstdint>

#include "framework/dtype.h"
#include "ops/attention_kernels.h"

namespace zt::ops {

#ifdef ZTRAIN_WITH_CUDNN
// Whether this machine's cuDNN release is used for sequence length T at all: not 9.10.0 and
// 9.10.1 (bf16 SDPA forward bugs), and before 9.15.1 only T % 128 == 0 (the backward needs a
// padding mask there, which these graphs do not carry). Shapes it refuses take the flash kernels.
bool cudnn_release_takes(int64_t T);

// Whether cuDNN runs this problem: bf16, D a multiple of 8, a.Hkv dividing a.H, 16-byte
// aligned operands, a usable cuDNN 9 on the device, and both plans built (cuDNN finalizes the
// graphs and offers an engine). Builds and caches the plans on the first call for a problem;
// false, with the reason under ZT_CUDNN_DEBUG=1, otherwise (the caller falls back to the flash
// kernels, or to the composite for grouped heads).
// Never builds a plan while the current stream is capturing a CUDA graph (false instead).
bool cudnn_attention_supported(const FlashArgs& a, DType dtype, const AttentionLayout& out_layout, int device);

// out (out_layout) = causal attention of a, stats [B, H, T] f32. Current stream. The problem
// must have passed cudnn_attention_supported().
void cudnn_attention_forward(const FlashArgs& a, DType dtype, void* out, const AttentionLayout& out_layout,
                             float* stats, int device);

// dq [B, H, T, D], dk and dv [B, Hkv, T, D] (laid out like a's q, k, v: a.in) from dout
// (out_layout, like out). Every element of dq, dk, dv is written. Current stream.
void cudnn_attention_backward(const FlashArgs& a, DType dtype, const void* out, const void* dout,
                              const AttentionLayout& out_layout, const float* stats, void* dq, void* dk, void* dv,
                              int device);

// Problems whose plans were built so far (refusals included): a second call with the same
// problem must not add one (tests; tools that check nothing is built inside a timed step).
int64_t cudnn_attention_plans_built();
#endif

}  // namespace zt::ops
