#pragma once
// Element and byte counts of shapes that are not yet allocated, above all shapes read from
// files (.npy headers, checkpoint tables). shape_numel() multiplies without checks, which is
// right for tensors that exist; a shape from a file can make that product wrap past 2^64 and
// a reader then allocate a few bytes and read far past them.
#include <cstddef>
#include <cstdint>
#include <string>

#include "framework/dtype.h"
#include "framework/tensor.h"

namespace zt {

// A negative dimension, or a product of the non-zero dimensions past INT64_MAX (so that no
// stride overflows either, even when another dimension is 0), is a zt::Error whose message
// starts with `what` (the file, or the caller).
int64_t checked_shape_numel(const Shape& s, const std::string& what);
// The same, and numel x element size past INT64_MAX.
size_t checked_nbytes(const Shape& s, DType dtype, const std::string& what);

}  // namespace zt
