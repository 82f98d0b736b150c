// CUDA kernels behind ops/rmsnorm.h: ops/norm_cuda.cuh's row-normalisation kernels without the
// mean and the bias (kCenter = false); one warp per row, statistics in f32 (f64 for f64).
#include "ops/norm_cuda.cuh"
#include "ops/rmsnorm_kernels.h"

namespace zt::ops {

Tensor rmsnorm_forward_cuda(const Tensor& x, const Tensor& gamma, double eps, Tensor& rstd) {
  return gpu::norm_forward_cuda<false>("rmsnorm", x, gamma, Tensor(), eps, nullptr, rstd);
}

void rmsnorm_backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor* dx,
                           Tensor* dgamma, const Tensor* dx_addend) {
  gpu::norm_backward_cuda<false>("rmsnorm", grad, x, gamma, Tensor(), rstd, dx, dgamma, nullptr, dx_addend);
}

}  // namespace zt::ops
