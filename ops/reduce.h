#pragma once
// Reductions to a scalar (accumulated in f32 for f32/bf16, f64 for f64).
#include "framework/autograd/variable.h"

namespace zt::ops {

Variable sum(const Variable& x);   // -> shape []
Variable mean(const Variable& x);  // -> shape []

}  // namespace zt::ops
