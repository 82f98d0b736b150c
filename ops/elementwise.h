#pragma once
// Elementwise arithmetic. b may equal a's shape, or be a row broadcast over a's leading
// dimensions (b's shape equal to a trailing part of a's shape, e.g. a bias [C] on [N, C]).
#include "framework/autograd/variable.h"

namespace zt::ops {

Variable add(const Variable& a, const Variable& b);
Variable sub(const Variable& a, const Variable& b);
Variable mul(const Variable& a, const Variable& b);
Variable scale(const Variable& a, double factor);  // a * factor, factor known on the host

}  // namespace zt::ops
