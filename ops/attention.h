#pragma once
// Causal scaled-dot-product attention: softmax(q k^T / sqrt(D) + causal mask) v.
#include "framework/autograd/variable.h"

namespace zt::ops {

// q [B, H, T, D], k and v [B, Hkv, T, D] -> [B, H, T, D], with Hkv dividing H: query head h
// uses key/value head h / (H / Hkv) (grouped-query attention; Hkv == H is plain multi-head,
// Hkv == 1 multi-query). Position t attends to positions <= t. The shared k and v are not
// copied per query head: the gradient of a key/value head is the sum over its group's query
// heads, accumulated directly.
Variable causal_attention(const Variable& q, const Variable& k, const Variable& v);

// Multi-head causal self-attention with grouped-query heads on a fused projection: qkv
// [B, T, (H + 2 Hkv) D] holds H query heads, then Hkv key heads, then Hkv value heads along its
// last dimension (query head h at columns [h D, (h + 1) D), key head j at [(H + j) D, ...),
// value head j at [(H + Hkv + j) D, ...)), with D = last dim / (H + 2 Hkv) the head size.
// Query head h uses key/value head h / (H / Hkv). H = n_head, Hkv = n_kv_head; Hkv must
// divide H and (H + 2 Hkv) must divide the last dimension (zt::Error naming the values
// otherwise). Returns [B, T, H D] with the heads merged (head h at columns [h D, (h + 1) D)).
// The same as splitting, viewing q as [B, H, T, D] and k, v as [B, Hkv, T, D],
// causal_attention and merging back.
//
// On CUDA with bf16 it is one fused call that reads the heads in place and writes the merged
// output, and whose backward writes d qkv directly (no split or transpose copies): cuDNN's
// fused attention where cuDNN takes the shape (D a multiple of 8; grouped heads included, its
// dK and dV hold the Hkv heads, each the sum over its group), else, only for Hkv == H, our
// flash kernels (D = 32 or 64; they have no grouped heads, so Hkv != H goes on to the
// composite); other cases take the composite. See AttentionBackend.
Variable causal_self_attention(const Variable& qkv, int64_t n_head, int64_t n_kv_head);

// Plain multi-head self-attention: qkv [B, T, 3C] = q | k | v, n_head heads of D = C / n_head
// each. The same as causal_self_attention(qkv, n_head, n_head).
Variable causal_self_attention(const Variable& qkv, int64_t n_head);

// The implementations of causal_self_attention on CUDA, in order of preference.
enum class AttentionBackend {
  cudnn,    // cuDNN's fused flash attention (ops/attention_cudnn.h)
  flash,    // our fused kernels (ops/flash_attention_cuda.cu); Hkv == H only
  unfused,  // split, cuBLASLt products around a softmax kernel, merge
};
const char* attention_backend_name(AttentionBackend backend);

// The first choice: ZT_ATTENTION=cudnn|flash|unfused (default cudnn); ZT_FLASH_ATTENTION=0,
// the older switch, means unfused. A call the choice cannot take goes down the list
// (cudnn -> flash -> unfused; grouped heads, Hkv != H, skip flash). Read once; another value
// is a zt::Error naming the variable.
AttentionBackend attention_backend();
// Overrides the environment from now on, process-wide (benchmarks and tests compare backends).
void set_attention_backend(AttentionBackend backend);
// The rule attention_backend() applies to the two variables' values (null when unset).
AttentionBackend parse_attention_backend(const char* zt_attention, const char* zt_flash_attention);

// How many causal_self_attention forward and backward passes each backend ran so far in this
// process (tests and tools check which implementation actually ran). CPU calls count as
// unfused forwards; the unfused composite's backward is its parts' and is not counted.
struct AttentionCalls {
  int64_t forward = 0, backward = 0;
};
AttentionCalls attention_calls(AttentionBackend backend);

}  // namespace zt::ops
