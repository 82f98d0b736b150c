#pragma once
// Differentiable dtype conversion: the compute-dtype copy of an f32 parameter (bf16
// training keeps f32 master weights). Backward converts the gradient back to the input's
// dtype. Identity (no copy, no node) when the dtype already matches.
#include "framework/autograd/variable.h"

namespace zt {

Variable cast(const Variable& x, DType dtype);

}  // namespace zt
