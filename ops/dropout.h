#pragma once
// Inverted dropout: keeps each element with probability 1-p and scales it by 1/(1-p).
#include "framework/autograd/variable.h"
#include "framework/random.h"

namespace zt::ops {

// Identity (no copy, no graph node) when p == 0 or !training.
Variable dropout(const Variable& x, double p, Generator& gen, bool training = true);

}  // namespace zt::ops
