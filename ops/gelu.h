#pragma once
// GELU, tanh form (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
#include "framework/autograd/variable.h"

namespace zt::ops {

Variable gelu(const Variable& x);

}  // namespace zt::ops
