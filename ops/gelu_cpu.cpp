#include <Eigen/Core>

#include "ops/cpu_compute.h"
#include "ops/gelu_kernels.h"

namespace zt::ops {

namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kCubic = 0.044715;
constexpr int64_t kChunk = 4096;  // elements per task: fits L1/L2 with its temporaries

template <class T>
using ArrayView = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstArrayView = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Runs f(begin, length) over [0, n) in chunks, threads taking chunks.
template <class F>
void for_chunks(int64_t n, F&& f) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) f(c * kChunk, std::min(kChunk, n - c * kChunk));
}

}  // namespace

// 0.5 (1 + tanh u) is evaluated as the equal sigmoid(2u) = 1 / (1 + exp(-2u)): for negative x,
// 1 + tanh u cancels and would cost f32 several digits; exp has no such cancellation (and
// Eigen's array exp is vectorised). exp(-2u) overflowing to inf gives s = 0: the right limit.
Tensor gelu_forward_cpu(const Tensor& x_in) {
  const Tensor x = cpu::to_compute(x_in);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  cpu::dispatch_compute(x.dtype(), "gelu", [&](auto tag) {
    using T = decltype(tag);
    const T k0 = T(kSqrt2OverPi), k1 = T(kCubic);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for_chunks(x.numel(), [&](int64_t b, int64_t len) {
      ConstArrayView<T> xa(px + b, len);
      ArrayView<T> ya(py + b, len);
      ya = xa / (T(1) + (T(-2) * k0 * (xa + k1 * xa.cube())).exp());
    });
  });
  return y.to(x_in.dtype());
}

Tensor gelu_backward_cpu(const Tensor& grad_in, const Tensor& x_in) {
  const Tensor g = cpu::to_compute(grad_in), x = cpu::to_compute(x_in);
  Tensor dx = Tensor::empty(x.shape(), x.dtype());
  cpu::dispatch_compute(x.dtype(), "gelu", [&](auto tag) {
    using T = decltype(tag);
    const T k0 = T(kSqrt2OverPi), k1 = T(kCubic);
    const T* pg = g.data<T>();
    const T* px = x.data<T>();
    T* pd = dx.data<T>();
    for_chunks(x.numel(), [&](int64_t b, int64_t len) {
      ConstArrayView<T> xa(px + b, len), ga(pg + b, len);
      ArrayView<T> da(pd + b, len);
      // With s = sigmoid(2u): 0.5 (1 + tanh u) = s and 0.5 (1 - tanh^2 u) = 2 s (1 - s).
      const Eigen::Array<T, Eigen::Dynamic, 1> s = T(1) / (T(1) + (T(-2) * k0 * (xa + k1 * xa.cube())).exp());
      da = ga * (s + T(2) * xa * s * (T(1) - s) * k0 * (T(1) + T(3) * k1 * xa.square()));
    });
  });
  return dx.to(x_in.dtype());
}

}  // namespace zt::ops
