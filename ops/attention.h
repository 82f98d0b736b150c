#pragma once
// Causal scaled-dot-product attention: softmax(q k^T / sqrt(D) + causal mask) v.
#include "framework/autograd/variable.h"

namespace zt::ops {

// q, k, v: [B, H, T, D] -> [B, H, T, D]. Position t attends to positions <= t.
Variable causal_attention(const Variable& q, const Variable& k, const Variable& v);

// Multi-head causal self-attention on a fused projection: qkv [B, T, 3C] holds q | k | v
// along its last dimension, head h of each at columns [h D, (h + 1) D) with D = C / n_head.
// Returns [B, T, C] with the heads merged (head h at columns [h D, (h + 1) D)). The same as
// splitting, viewing as [B, H, T, D], causal_attention and merging back. On CUDA with bf16 it
// is one fused call that reads the heads in place and writes the merged output, and whose
// backward writes d qkv directly (no split or transpose copies): cuDNN's fused attention
// where cuDNN takes the shape (D a multiple of 8), else our flash kernels (D = 32 or 64);
// other cases take the composite. See AttentionBackend.
Variable causal_self_attention(const Variable& qkv, int64_t n_head);

// The implementations of causal_self_attention on CUDA, in order of preference.
enum class AttentionBackend {
  cudnn,    // cuDNN's fused flash attention (ops/attention_cudnn.h)
  flash,    // our fused kernels (ops/flash_attention_cuda.cu)
  unfused,  // split, cuBLASLt products around a softmax kernel, merge
};
const char* attention_backend_name(AttentionBackend backend);

// The first choice: ZT_ATTENTION=cudnn|flash|unfused (default cudnn); ZT_FLASH_ATTENTION=0,
// the older switch, means unfused. A call the choice cannot take goes down the list
// (cudnn -> flash -> unfused). Read once; another value is a zt::Error naming the variable.
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
