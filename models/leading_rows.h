#pragma once
// The first `rows` rows of a [R, C] Variable as a differentiable view (no copy: leading
// rows of a row-major tensor are contiguous). Backward pads the gradient with zero rows.
//
// The GPT token-embedding lookup uses it on the padded, tied embedding table, so that an id
// in the padding is out of range (the LM head multiplies by the whole padded table).
#include "framework/autograd/variable.h"

namespace zt {

Variable leading_rows(const Variable& x, int64_t rows);

}  // namespace zt
