#include <cmath>

#include "ops/cpu_compute.h"
#include "ops/layernorm_kernels.h"

namespace zt::ops {

Tensor layernorm_forward_cpu(const Tensor& x_in, const Tensor& gamma_in, const Tensor& beta_in, double eps,
                             Tensor& mean, Tensor& rstd) {
  const Tensor x = cpu::to_compute(x_in), gamma = cpu::to_compute(gamma_in), beta = cpu::to_compute(beta_in);
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  mean = Tensor::empty({rows}, x.dtype());
  rstd = Tensor::empty({rows}, x.dtype());
  cpu::dispatch_compute(x.dtype(), "layernorm", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pg = gamma.data<T>();
    const T* pb = beta.data<T>();
    T* py = y.data<T>();
    T* pm = mean.data<T>();
    T* ps = rstd.data<T>();
#pragma omp parallel for schedule(static) if (x.numel() >= cpu::kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * C;
      T* yr = py + r * C;
      T s = 0;
      for (int64_t j = 0; j < C; ++j) s += xr[j];
      const T m = s / T(C);
      T v = 0;  // two passes: the variance of centred values does not cancel catastrophically
      for (int64_t j = 0; j < C; ++j) v += (xr[j] - m) * (xr[j] - m);
      const T inv = T(1) / std::sqrt(v / T(C) + T(eps));
      for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - m) * inv * pg[j] + pb[j];
      pm[r] = m;
      ps[r] = inv;
    }
  });
  return y.to(x_in.dtype());
}

void layernorm_backward_cpu(const Tensor& grad_in, const Tensor& x_in, const Tensor& gamma_in, const Tensor& mean,
                            const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta, const Tensor* dx_addend) {
  const Tensor g = cpu::to_compute(grad_in), x = cpu::to_compute(x_in), gamma = cpu::to_compute(gamma_in);
  const Tensor addend = dx && dx_addend ? cpu::to_compute(*dx_addend) : Tensor();
  const int64_t C = x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  Tensor dx_c = dx ? Tensor::empty(x.shape(), x.dtype()) : Tensor();
  Tensor dgb = Tensor::empty({2, C}, x.dtype());  // dgamma and dbeta, summed over rows together
  cpu::dispatch_compute(x.dtype(), "layernorm", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = g.data<T>();
    const T* px = x.data<T>();
    const T* pgam = gamma.data<T>();
    const T* pm = mean.data<T>();
    const T* ps = rstd.data<T>();
    T* pdx = dx ? dx_c.data<T>() : nullptr;
    const T* padd = addend.defined() ? addend.data<T>() : nullptr;
    const bool params = dgamma || dbeta;
    auto row = [&](int64_t r, T* acc) {
      const T* gr = pg + r * C;
      const T* xr = px + r * C;
      const T m = pm[r], s = ps[r];
      if (params) {
        for (int64_t j = 0; j < C; ++j) {
          acc[j] += gr[j] * (xr[j] - m) * s;
          acc[C + j] += gr[j];
        }
      }
      if (pdx) {
        T sum_dxhat = 0, sum_dxhat_xhat = 0;
        for (int64_t j = 0; j < C; ++j) {
          const T dxhat = gr[j] * pgam[j];
          sum_dxhat += dxhat;
          sum_dxhat_xhat += dxhat * (xr[j] - m) * s;
        }
        const T a = sum_dxhat / T(C), b = sum_dxhat_xhat / T(C);
        T* dr = pdx + r * C;
        for (int64_t j = 0; j < C; ++j) dr[j] = s * (gr[j] * pgam[j] - a - (xr[j] - m) * s * b);
        if (padd)
          for (int64_t j = 0; j < C; ++j) dr[j] += padd[r * C + j];
      }
    };
    cpu::sum_over_rows<T>(rows, 2 * C, dgb.data<T>(), row);
  });
  if (dx) *dx = dx_c.to(x_in.dtype());
  if (dgamma) *dgamma = dgb.select(0, 0).contiguous().to(gamma_in.dtype());
  if (dbeta) *dbeta = dgb.select(0, 1).contiguous().to(gamma_in.dtype());
}

}  // namespace zt::ops
