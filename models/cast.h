#pragma once
// Differentiable dtype conversion: the compute-dtype copy of an f32 parameter (bf16
// training keeps f32 master weights). The gradient reaches the input in the input's dtype:
// the node passes it through and the engine converts it (the f32 masters' widenings all in one
// multi-tensor kernel at the end of backward). Identity (no copy, no node) when the dtype
// already matches.
//
// The copy of a leaf (a parameter) is kept on the leaf and reused while the leaf's storage
// version (framework/storage.h) is unchanged, so a bf16 forward casts each master weight
// once per optimizer step (AdamW bumps the versions), not once per forward: with gradient
// accumulation, once per grad_accum micro-batches. Anything that writes a parameter other
// than through Tensor's in-place methods must bump its storage's version.
// Treat the result as read-only: it may be the copy every later forward gets too.
#include "framework/autograd/variable.h"

namespace zt {

Variable cast(const Variable& x, DType dtype);

}  // namespace zt
