#include <cmath>

#include "ops/cpu_compute.h"
#include "ops/rmsnorm_kernels.h"

namespace zt::ops {

Tensor rmsnorm_forward_cpu(const Tensor& x_in, const Tensor& gamma_in, double eps, Tensor& rstd) {
  const Tensor x = cpu::to_compute(x_in), gamma = cpu::to_compute(gamma_in);
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  rstd = Tensor::empty({rows}, x.dtype());
  cpu::dispatch_compute(x.dtype(), "rmsnorm", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pg = gamma.data<T>();
    T* py = y.data<T>();
    T* ps = rstd.data<T>();
#pragma omp parallel for schedule(static) if (x.numel() >= cpu::kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * C;
      T* yr = py + r * C;
      T ss = 0;
      for (int64_t j = 0; j < C; ++j) ss += xr[j] * xr[j];
      const T inv = T(1) / std::sqrt(ss / T(C) + T(eps));
      for (int64_t j = 0; j < C; ++j) yr[j] = xr[j] * inv * pg[j];
      ps[r] = inv;
    }
  });
  return y.to(x_in.dtype());
}

void rmsnorm_backward_cpu(const Tensor& grad_in, const Tensor& x_in, const Tensor& gamma_in, const Tensor& rstd,
                          Tensor* dx, Tensor* dgamma, const Tensor* dx_addend) {
  const Tensor g = cpu::to_compute(grad_in), x = cpu::to_compute(x_in), gamma = cpu::to_compute(gamma_in);
  const Tensor addend = dx && dx_addend ? cpu::to_compute(*dx_addend) : Tensor();
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  Tensor dx_c = dx ? Tensor::empty(x.shape(), x.dtype()) : Tensor();
  Tensor dg = Tensor::empty({C}, x.dtype());
  cpu::dispatch_compute(x.dtype(), "rmsnorm", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = g.data<T>();
    const T* px = x.data<T>();
    const T* pgam = gamma.data<T>();
    const T* ps = rstd.data<T>();
    T* pdx = dx ? dx_c.data<T>() : nullptr;
    const T* padd = addend.defined() ? addend.data<T>() : nullptr;
    auto row = [&](int64_t r, T* acc) {
      const T* gr = pg + r * C;
      const T* xr = px + r * C;
      const T s = ps[r];
      if (dgamma)
        for (int64_t j = 0; j < C; ++j) acc[j] += gr[j] * xr[j] * s;
      if (pdx) {
        T sum_dxhat_xhat = 0;
        for (int64_t j = 0; j < C; ++j) sum_dxhat_xhat += gr[j] * pgam[j] * xr[j] * s;
        const T b = sum_dxhat_xhat / T(C);
        T* dr = pdx + r * C;
        for (int64_t j = 0; j < C; ++j) dr[j] = s * (gr[j] * pgam[j] - xr[j] * s * b);
        if (padd)
          for (int64_t j = 0; j < C; ++j) dr[j] += padd[r * C + j];
      }
    };
    cpu::sum_over_rows<T>(rows, C, dg.data<T>(), row);
  });
  if (dx) *dx = dx_c.to(x_in.dtype());
  if (dgamma) *dgamma = dg.to(gamma_in.dtype());
}

}  // namespace zt::ops
