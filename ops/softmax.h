#pragma once
// Softmax over the last dimension.
#include "framework/autograd/variable.h"

namespace zt::ops {

Variable softmax(const Variable& x);

}  // namespace zt::ops
