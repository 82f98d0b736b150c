#pragma once
// Causal scaled-dot-product attention: softmax(q k^T / sqrt(D) + causal mask) v.
#include "framework/autograd/variable.h"

namespace zt::ops {

// q, k, v: [B, H, T, D] -> [B, H, T, D]. Position t attends to positions <= t.
Variable causal_attention(const Variable& q, const Variable& k, const Variable& v);

// Multi-head causal self-attention on a fused projection: qkv [B, T, 3C] holds q | k | v
// along its last dimension, head h of each at columns [h D, (h + 1) D) with D = C / n_head.
// Returns [B, T, C] with the heads merged (head h at columns [h D, (h + 1) D)). The same as
// splitting, viewing as [B, H, T, D], causal_attention and merging back; on CUDA with bf16
// and D = 32 or 64 it is one fused kernel that reads the heads in place and writes the
// merged output, and whose backward writes d qkv directly (no split or transpose copies).
Variable causal_self_attention(const Variable& qkv, int64_t n_head);

}  // namespace zt::ops
