#pragma once
// CPU kernels behind ops/elementwise.h (internal to ops/).
#include "framework/tensor.h"

namespace zt::ops {

enum class BinaryOp { add, sub, mul };

// out = a (op) b where b's elements repeat over a's leading dimensions (b.numel() divides
// a.numel(); equal shapes are the case of one repetition). Result has a's shape and dtype.
Tensor binary_cpu(BinaryOp op, const Tensor& a, const Tensor& b);

// out = a * factor.
Tensor scale_cpu(const Tensor& a, double factor);

// sum over the rows of x * y, with x viewed as [rows, cols] and y the same size: [cols].
// The gradient of a row-broadcast factor of mul.
Tensor mul_sum_rows_cpu(const Tensor& x, const Tensor& y, int64_t cols);

// CUDA kernels (ops/elementwise_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
Tensor binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor scale_cuda(const Tensor& a, double factor);
Tensor mul_sum_rows_cuda(const Tensor& x, const Tensor& y, int64_t cols);
#endif

}  // namespace zt::ops
