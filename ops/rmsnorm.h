#pragma once
// RMSNorm over the last dimension (Llama, OLMo 2): y = x / sqrt(mean(x^2) + eps) * gamma, no
// mean subtraction, no bias. x [..., C], gamma [C]; f32, bf16 (computed in f32), f64.
#include "framework/autograd/variable.h"

namespace zt::ops {

Variable rmsnorm(const Variable& x, const Variable& gamma, double eps = 1e-5);

}  // namespace zt::ops
