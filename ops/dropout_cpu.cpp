#include "ops/cpu_compute.h"
#include "ops/dropout_kernels.h"

namespace zt::ops {

std::vector<uint8_t> dropout_mask(int64_t n, double p, Generator& gen) {
  std::vector<uint8_t> keep(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) keep[i] = gen.uniform() >= p ? 1 : 0;
  return keep;
}

Tensor dropout_apply_cpu(const Tensor& x_in, const std::vector<uint8_t>& keep, double p) {
  const Tensor x = cpu::to_compute(x_in);
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  const int64_t n = x.numel();
  cpu::dispatch_compute(x.dtype(), "dropout", [&](auto tag) {
    using T = decltype(tag);
    // p == 1 drops everything; the scale is then never used (0 * inf would be NaN).
    const T s = p < 1 ? T(1.0 / (1.0 - p)) : T(0);
    const T* px = x.data<T>();
    const uint8_t* m = keep.data();
    T* po = out.data<T>();
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelMin)
    for (int64_t i = 0; i < n; ++i) po[i] = m[i] ? px[i] * s : T(0);
  });
  return out.to(x_in.dtype());
}

}  // namespace zt::ops
