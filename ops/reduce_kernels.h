#pragma once
// CPU kernels behind ops/reduce.h, and the row reduction other ops' backward passes share
// (internal to ops/). Accumulation is in f32 for f32/bf16 and f64 for f64.
#include "framework/tensor.h"

namespace zt::ops {

// Sum of all elements: a [] tensor of the accumulation dtype (f32 for f32/bf16, f64 for f64).
Tensor sum_all_cpu(const Tensor& x);

// x viewed as [rows, cols] (cols must divide numel) summed over its rows: [cols] of x's dtype.
// The gradient of a bias or of a row-broadcast operand.
Tensor sum_rows_cpu(const Tensor& x, int64_t cols);

// CUDA kernels (ops/reduce_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
Tensor sum_all_cuda(const Tensor& x);
Tensor sum_rows_cuda(const Tensor& x, int64_t cols);
#endif

}  // namespace zt::ops
