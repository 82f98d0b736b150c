#include "ops/moments.h"

#include <limits>

#include "framework/error.h"
#include "ops/device_dispatch.h"
#include "ops/moments_kernels.h"

namespace zt::ops {

Moments::Moments(Device device)
    : sums(Tensor::zeros({4}, DType::f64, device)), maxes(Tensor::zeros({2}, DType::f64, device)) {
  maxes.slice(0, 0, 1).fill_(-std::numeric_limits<double>::infinity());
}

void accumulate_moments(const Tensor& x_in, int64_t cols, int64_t causal_period, Moments& acc) {
  ZT_CHECK(x_in.dim() == 2, "accumulate_moments: x must be [rows, width], got ", x_in.dim(), " dimensions");
  ZT_CHECK(cols >= 0 && cols <= x_in.shape()[1], "accumulate_moments: cols ", cols, " outside [0, ", x_in.shape()[1],
           "]");
  ZT_CHECK(causal_period >= 0, "accumulate_moments: causal_period ", causal_period, " is negative");
  ZT_CHECK(x_in.device() == acc.sums.device(), "accumulate_moments: x on ", x_in.device().str(), ", totals on ",
           acc.sums.device().str());
  if (x_in.numel() == 0 || cols == 0) return;
  // Rows may be strided (a column slice); the columns must be adjacent.
  const Tensor x = x_in.strides()[1] == 1 ? x_in : x_in.contiguous();
  ZT_ON_DEVICE(x, accumulate_moments_cpu(x, cols, causal_period, acc.sums, acc.maxes),
               accumulate_moments_cuda(x, cols, causal_period, acc.sums, acc.maxes));
}

}  // namespace zt::ops
