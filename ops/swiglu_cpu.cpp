#include <cmath>

#include "ops/cpu_compute.h"
#include "ops/swiglu_kernels.h"

namespace zt::ops {

namespace {

Shape half_last(const Shape& s) {
  Shape out = s;
  out.back() /= 2;
  return out;
}

// sigmoid(a) = 1 / (1 + exp(-a)); exp(-a) overflowing to inf gives 0, the right limit.
template <class T>
T sigmoid(T a) {
  return T(1) / (T(1) + std::exp(-a));
}

}  // namespace

Tensor swiglu_forward_cpu(const Tensor& gu_in) {
  const Tensor gu = cpu::to_compute(gu_in);
  const int64_t F = gu.shape().back() / 2, rows = F == 0 ? 0 : gu.numel() / (2 * F);
  Tensor y = Tensor::empty(half_last(gu.shape()), gu.dtype());
  cpu::dispatch_compute(gu.dtype(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    const T* px = gu.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) if (gu.numel() >= cpu::kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      const T* a = px + r * 2 * F;
      const T* b = a + F;
      T* yr = py + r * F;
      for (int64_t j = 0; j < F; ++j) yr[j] = a[j] * sigmoid(a[j]) * b[j];
    }
  });
  return y.to(gu_in.dtype());
}

Tensor swiglu_backward_cpu(const Tensor& grad_in, const Tensor& gu_in) {
  const Tensor g = cpu::to_compute(grad_in), gu = cpu::to_compute(gu_in);
  const int64_t F = gu.shape().back() / 2, rows = F == 0 ? 0 : gu.numel() / (2 * F);
  Tensor d = Tensor::empty(gu.shape(), gu.dtype());
  cpu::dispatch_compute(gu.dtype(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    const T* px = gu.data<T>();
    const T* pg = g.data<T>();
    T* pd = d.data<T>();
#pragma omp parallel for schedule(static) if (gu.numel() >= cpu::kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      const T* a = px + r * 2 * F;
      const T* b = a + F;
      const T* gr = pg + r * F;
      T* da = pd + r * 2 * F;
      T* db = da + F;
      for (int64_t j = 0; j < F; ++j) {
        const T s = sigmoid(a[j]);
        da[j] = gr[j] * b[j] * s * (T(1) + a[j] * (T(1) - s));
        db[j] = gr[j] * a[j] * s;
      }
    }
  });
  return d.to(gu_in.dtype());
}

}  // namespace zt::ops
