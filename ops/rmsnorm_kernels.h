#pragma once
// CPU kernels behind ops/rmsnorm.h (internal to ops/).
#include "framework/tensor.h"

namespace zt::ops {

// y = x * rstd * gamma over rows of x [rows, C]; also writes each row's rstd =
// 1/sqrt(mean(x^2) + eps) ([rows], f32 for f32/bf16, f64 for f64) for backward.
Tensor rmsnorm_forward_cpu(const Tensor& x, const Tensor& gamma, double eps, Tensor& rstd);

// Gradients of x and gamma given grad of y; a pointer left null skips that gradient. With
// xhat = x rstd and dxhat = grad * gamma, per row:
//   dx = rstd (dxhat - xhat mean_j(dxhat xhat)) [+ dx_addend],  dgamma = sum over rows of grad xhat.
// dx_addend (optional, x's dtype and shape): another gradient of x, added in the accumulation
// dtype before dx is rounded (the autograd engine's gradient folding).
void rmsnorm_backward_cpu(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor* dx,
                          Tensor* dgamma, const Tensor* dx_addend = nullptr);

// CUDA kernels (ops/rmsnorm_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
Tensor rmsnorm_forward_cuda(const Tensor& x, const Tensor& gamma, double eps, Tensor& rstd);
void rmsnorm_backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor* dx,
                           Tensor* dgamma, const Tensor* dx_addend = nullptr);
#endif

}  // namespace zt::ops
