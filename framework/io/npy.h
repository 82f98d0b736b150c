#pragma once
// NumPy .npy files (format versions 1.0-3.0): little-endian f32 ('<f4'), f64 ('<f8'),
// i32 ('<i4') and i64 ('<i8') arrays in C order. Anything else (another magic, Fortran
// order, big-endian, other dtypes, a truncated file) is a zt::Error naming the file.
#include <string>

#include "framework/tensor.h"

namespace zt::io {

Tensor read_npy(const std::string& path);  // a contiguous CPU tensor
// Writes a tensor of any device and strides; bf16 is written as f32 (NumPy has no bf16).
void write_npy(const std::string& path, const Tensor& t);

}  // namespace zt::io
