#pragma once
// Copies between strided views of one device's memory, converting the element type: the
// kernel behind Tensor::copy_ (and so contiguous(), clone(), reshape of a view) for CUDA
// tensors that are not both contiguous. Issued on current_stream(), no host sync.
#include <cstdint>
#include <vector>

#include "framework/dtype.h"

namespace zt::cuda {

// dst[i...] = src[i...] over `shape` (at most 8 dimensions); strides in elements, pointers
// at each view's first element.
void strided_copy(int device, void* dst, DType dst_dtype, const std::vector<int64_t>& dst_strides, const void* src,
                  DType src_dtype, const std::vector<int64_t>& src_strides, const std::vector<int64_t>& shape);

}  // namespace zt::cuda
