#pragma once
// CPU kernels behind ops/shape_ops.h (internal to ops/). They move bytes only, so they
// work for every dtype.
#include "framework/tensor.h"

namespace zt::ops {

// A contiguous copy of a strided host tensor (the tensor itself when already contiguous).
// Rows of the innermost dimension are copied with memcpy when it has stride 1, threads
// split the rows; Tensor::contiguous() is the generic, element-at-a-time fallback.
Tensor contiguous_cpu(const Tensor& t);

// [..., part] -> [..., full] with zeros outside columns [offset, offset + part): the gradient
// of one piece of split_last.
Tensor pad_last_cpu(const Tensor& piece, int64_t full, int64_t offset);

// CUDA kernels (ops/shape_ops_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
Tensor pad_last_cuda(const Tensor& piece, int64_t full, int64_t offset);
#endif

}  // namespace zt::ops
