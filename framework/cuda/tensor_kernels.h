#pragma once
// Elementwise kernels behind Tensor::fill_ / scale_ / add_ / copy_ for contiguous CUDA
// tensors on `device`, issued on current_stream() without a host synchronisation. Element conversions
// follow the host's: floats round to nearest even, integers truncate.
#include <cstdint>

#include "framework/dtype.h"

namespace zt::cuda {

void fill(int device, void* dst, DType dtype, int64_t n, double value);
void scale(int device, void* data, DType dtype, int64_t n, double factor);
// a += alpha * b, b converted to a's dtype.
void add_scaled(int device, void* a, DType a_dtype, const void* b, DType b_dtype, int64_t n, double alpha);
void convert(int device, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n);

}  // namespace zt::cuda
