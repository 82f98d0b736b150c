#pragma once
// The first `rows` rows of a [R, C] Variable as a differentiable view (no copy: leading
// rows of a row-major tensor are contiguous). Backward pads the gradient with zero rows.
//
// The GPT LM head uses it to multiply by the real-vocabulary rows of the padded, tied
// embedding table, so padded logits are never computed and cannot enter the loss or sampling.
#include "framework/autograd/variable.h"

namespace zt {

Variable leading_rows(const Variable& x, int64_t rows);

}  // namespace zt
