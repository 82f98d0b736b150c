#pragma once
// CPU kernels behind ops/gelu.h (internal to ops/).
#include "framework/tensor.h"

namespace zt::ops {

// y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
Tensor gelu_forward_cpu(const Tensor& x);
// dx = grad (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)).
Tensor gelu_backward_cpu(const Tensor& grad, const Tensor& x);

// CUDA kernels (ops/gelu_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
Tensor gelu_forward_cuda(const Tensor& x);
Tensor gelu_backward_cuda(const Tensor& grad, const Tensor& x);
#endif

}  // namespace zt::ops
