#pragma once
// CPU kernels behind ops/layernorm.h (internal to ops/).
#include "framework/tensor.h"

namespace zt::ops {

// y = (x - mean) * rstd * gamma + beta over rows of x [rows, C]; also writes each row's
// mean and rstd = 1/sqrt(var + eps) ([rows], f32 for f32/bf16, f64 for f64) for backward.
Tensor layernorm_forward_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& mean,
                             Tensor& rstd);

// Gradients of x, gamma, beta given grad of y; a pointer left null skips that gradient.
// With xhat = (x - mean) rstd and dxhat = grad * gamma, per row:
//   dx = rstd (dxhat - mean_j(dxhat) - xhat mean_j(dxhat xhat)) [+ dx_addend],
//   dgamma = sum over rows of grad xhat, dbeta = sum over rows of grad.
// dx_addend (optional, x's dtype and shape): another gradient of x, added in the accumulation
// dtype before dx is rounded (the autograd engine's gradient folding).
void layernorm_backward_cpu(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                            const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta,
                            const Tensor* dx_addend = nullptr);

// CUDA kernels (ops/layernorm_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
Tensor layernorm_forward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& mean,
                              Tensor& rstd);
void layernorm_backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                             const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta,
                             const Tensor* dx_addend = nullptr);
#endif

}  // namespace zt::ops
