#pragma once
// SwiGLU (Llama, OLMo 2, Qwen 3 feed-forward): the gate and the up projection in one tensor.
// gate_up [..., 2F]: columns [0, F) are the gate a, columns [F, 2F) the up projection b.
// Returns [..., F] = silu(a) * b, silu(a) = a * sigmoid(a). f32, bf16 (computed in f32), f64.
#include "framework/autograd/variable.h"

namespace zt::ops {

Variable swiglu(const Variable& gate_up);

}  // namespace zt::ops
