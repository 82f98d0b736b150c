#pragma once
// CPU kernels behind ops/softmax.h (internal to ops/).
#include "framework/tensor.h"

namespace zt::ops {

// y = exp(x - max) / sum exp(x - max) over the last dimension.
Tensor softmax_forward_cpu(const Tensor& x);
// dx = y (grad - sum_j grad_j y_j) per row, from the forward's output y.
Tensor softmax_backward_cpu(const Tensor& grad, const Tensor& y);

// CUDA kernels (ops/softmax_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
Tensor softmax_forward_cuda(const Tensor& x);
Tensor softmax_backward_cuda(const Tensor& grad, const Tensor& y);
#endif

}  // namespace zt::ops
