#pragma once
// Differentiable reshapes and layout changes.
#include "framework/autograd/variable.h"

namespace zt::ops {

Variable reshape(const Variable& x, const Shape& shape);
// Swaps two dimensions and returns a contiguous result (attention's head split/merge).
Variable transpose(const Variable& x, int64_t d0, int64_t d1);
// Splits the last dimension into `parts` equal pieces (the fused qkv projection).
std::vector<Variable> split_last(const Variable& x, int64_t parts);
// Splits the last dimension into consecutive pieces of the given widths, which must add up to
// it (the grouped-query qkv projection: H D | Hkv D | Hkv D).
std::vector<Variable> split_last(const Variable& x, const std::vector<int64_t>& widths);
// Stacks tensors along dimension 0 (the other dimensions equal; same dtype and device): the
// llama family's q and kv projection weights joined into one fused qkv product.
Variable concat_rows(const std::vector<Variable>& xs);

}  // namespace zt::ops
