#pragma once
// Row lookup: out[i, :] = weight[ids[i], :]. Backward scatter-adds into the weight gradient.
#include "framework/autograd/variable.h"

namespace zt::ops {

// weight [V, C]; ids i32/i64 of any shape S (no gradient) -> [S..., C].
// An id outside [0, V) is an error naming the position and value.
Variable embedding(const Variable& weight, const Variable& ids);

}  // namespace zt::ops
