#pragma once
// LayerNorm over the last dimension: y = (x - mean) / sqrt(var + eps) * gamma + beta.
#include "framework/autograd/variable.h"

namespace zt::ops {

Variable layernorm(const Variable& x, const Variable& gamma, const Variable& beta, double eps = 1e-5);

}  // namespace zt::ops
