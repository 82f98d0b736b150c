// CUDA kernels behind ops/layernorm.h: ops/norm_cuda.cuh's row-normalisation kernels with the
// mean and beta (kCenter = true); one warp per row, statistics in f32 (f64 for f64).
#include "ops/layernorm_kernels.h"
#include "ops/norm_cuda.cuh"

namespace zt::ops {

Tensor layernorm_forward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& mean,
                              Tensor& rstd) {
  return gpu::norm_forward_cuda<true>("layernorm", x, gamma, beta, eps, &mean, rstd);
}

void layernorm_backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                             const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta, const Tensor* dx_addend) {
  gpu::norm_backward_cuda<true>("layernorm", grad, x, gamma, mean, rstd, dx, dgamma, dbeta, dx_addend);
}

}  // namespace zt::ops
