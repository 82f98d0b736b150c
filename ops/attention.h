#pragma once
// Causal scaled-dot-product attention: softmax(q k^T / sqrt(D) + causal mask) v.
#include "framework/autograd/variable.h"

namespace zt::ops {

// q, k, v: [B, H, T, D] -> [B, H, T, D]. Position t attends to positions <= t.
Variable causal_attention(const Variable& q, const Variable& k, const Variable& v);

}  // namespace zt::ops
