#include <Eigen/Core>

#include "ops/cpu_compute.h"
#include "ops/softmax_kernels.h"

namespace zt::ops {

namespace {
template <class T>
using RowView = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstRowView = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
}  // namespace

Tensor softmax_forward_cpu(const Tensor& x_in) {
  const Tensor x = cpu::to_compute(x_in);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  const int64_t C = x.dim() == 0 ? 1 : x.shape().back(), rows = C == 0 ? 0 : x.numel() / C;
  cpu::dispatch_compute(x.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) if (x.numel() >= cpu::kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      ConstRowView<T> xr(px + r * C, C);
      RowView<T> yr(py + r * C, C);
      yr = (xr - xr.maxCoeff()).exp();  // vectorised exp
      yr *= T(1) / yr.sum();
    }
  });
  return y.to(x_in.dtype());
}

Tensor softmax_backward_cpu(const Tensor& grad_in, const Tensor& y_in) {
  const Tensor g = cpu::to_compute(grad_in), y = cpu::to_compute(y_in);
  Tensor dx = Tensor::empty(y.shape(), y.dtype());
  const int64_t C = y.dim() == 0 ? 1 : y.shape().back(), rows = C == 0 ? 0 : y.numel() / C;
  cpu::dispatch_compute(y.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = g.data<T>();
    const T* py = y.data<T>();
    T* pd = dx.data<T>();
#pragma omp parallel for schedule(static) if (y.numel() >= cpu::kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      ConstRowView<T> gr(pg + r * C, C), yr(py + r * C, C);
      RowView<T> dr(pd + r * C, C);
      const T dot = (gr * yr).sum();
      dr = yr * (gr - dot);
    }
  });
  return dx.to(y_in.dtype());
}

}  // namespace zt::ops
