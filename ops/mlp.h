#pragma once
// The transformer's feed-forward block, one op: linear(gelu(linear(x, w_fc, b_fc)), w_proj,
// b_proj), GELU in its tanh form (ops/gelu.h). w_fc is [hidden, in], w_proj [out, hidden]
// (nn.Linear layout); biases [hidden] / [out] or undefined.
//
// Why one op: on CUDA (f32/bf16, hidden a multiple of 8) GELU rides on the products around
// it. The fc product writes gelu(pre) and the pre-activation in one pass (cuBLASLt's
// GELU_AUX_BIAS epilogue), and in the backward the product that forms d gelu(pre) applies
// gelu'(pre) as it writes (DGELU): no separate GELU kernels reading and writing the
// [rows, hidden] activation and its gradient (gpt_small on an H200: 34.2 -> 33.4 ms a step
// at B=16, 64.6 -> 63.1 ms at B=32). Elsewhere
// (CPU, f64, other widths) it is exactly the composite of linear and gelu. Same values and
// gradients either way, up to rounding.
//
// With residual ([..., out], x's dtype and device) the output is residual + mlp(x): the
// residual connection's add rides on the output product like ops::linear's residual (on
// CUDA cuBLASLt reads it as its C input; no separate add kernel, one rounding).
#include <cstdint>

#include "framework/autograd/variable.h"

namespace zt::ops {

Variable mlp(const Variable& x, const Variable& w_fc, const Variable& b_fc, const Variable& w_proj,
             const Variable& b_proj, const Variable& residual = Variable());

// How many mlp() forward passes, and backward passes, ran GELU on the epilogues (tests, tools).
struct MlpFusionStats {
  int64_t forward = 0, backward = 0;
};
MlpFusionStats mlp_fusion_stats();

}  // namespace zt::ops
