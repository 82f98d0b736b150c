#include "ops/cpu_compute.h"
#include "ops/elementwise_kernels.h"

namespace zt::ops {

namespace {

// out[r, j] = f(a[r, j], b[j]) over a viewed as [rows, cols]; the inner loop vectorises.
template <class T, class F>
void rows_apply(const T* a, const T* b, T* out, int64_t n, int64_t cols, F f) {
  const int64_t rows = cols == 0 ? 0 : n / cols;
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* ar = a + r * cols;
    T* orow = out + r * cols;
    for (int64_t j = 0; j < cols; ++j) orow[j] = f(ar[j], b[j]);
  }
}

}  // namespace

Tensor binary_cpu(BinaryOp op, const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = cpu::to_compute(a_in), b = cpu::to_compute(b_in);
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  const int64_t n = a.numel(), cols = b.numel();
  cpu::dispatch_compute(a.dtype(), "elementwise", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    auto run = [&](auto f) {
      if (cols == n) {
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelMin)
        for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
      } else {
        rows_apply(pa, pb, po, n, cols, f);
      }
    };
    switch (op) {
      case BinaryOp::add: run([](T x, T y) { return x + y; }); break;
      case BinaryOp::sub: run([](T x, T y) { return x - y; }); break;
      case BinaryOp::mul: run([](T x, T y) { return x * y; }); break;
    }
  });
  return out.to(a_in.dtype());
}

Tensor scale_cpu(const Tensor& a_in, double factor) {
  const Tensor a = cpu::to_compute(a_in);
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  const int64_t n = a.numel();
  cpu::dispatch_compute(a.dtype(), "scale", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    const T f = static_cast<T>(factor);
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelMin)
    for (int64_t i = 0; i < n; ++i) po[i] = pa[i] * f;
  });
  return out.to(a_in.dtype());
}

Tensor mul_sum_rows_cpu(const Tensor& x_in, const Tensor& y_in, int64_t cols) {
  const Tensor x = cpu::to_compute(x_in), y = cpu::to_compute(y_in);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  Tensor out = Tensor::empty({cols}, x.dtype());
  cpu::dispatch_compute(x.dtype(), "mul", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* py = y.data<T>();
    cpu::sum_over_rows<T>(rows, cols, out.data<T>(), [&](int64_t r, T* acc) {
      const T* xr = px + r * cols;
      const T* yr = py + r * cols;
      for (int64_t j = 0; j < cols; ++j) acc[j] += xr[j] * yr[j];
    });
  });
  return out.to(x_in.dtype());
}

}  // namespace zt::ops
