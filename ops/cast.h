#pragma once
// Differentiable dtype conversion: in bf16 training, the compute-dtype copy of an f32 master
// weight. For a leaf (a parameter) the copy is the one framework/autograd/mixed_precision.h
// keeps on the leaf, reused until the master changes; any other input is converted afresh.
// The gradient passes through in the output's dtype and the engine widens it into the
// master's .grad (mixed_precision.h: all the widenings of a backward in one kernel).
// Identity (no copy, no node) when the dtype already matches, except for a compute-resident
// leaf (mixed_precision.h: no copy, but the node). Treat the result as read-only:
// it may be the copy every later forward gets too.
#include "framework/autograd/variable.h"

namespace zt::ops {

Variable cast(const Variable& x, DType dtype);

}  // namespace zt::ops
