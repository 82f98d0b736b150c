#pragma once
// Kernels behind ops/moments.h (internal to ops/): x [R, W] with row stride ld (unit column
// stride), the first `cols` columns, causal_period as in accumulate_moments; sums f64 [4] and
// maxes f64 [2] on x's device, updated in place. The order of the additions is fixed (blocks
// of elements summed in order): the same value on every run.
#include <cstdint>

#include "framework/tensor.h"

namespace zt::ops {

void accumulate_moments_cpu(const Tensor& x, int64_t cols, int64_t causal_period, Tensor& sums, Tensor& maxes);

#ifdef ZTRAIN_WITH_CUDA
void accumulate_moments_cuda(const Tensor& x, int64_t cols, int64_t causal_period, Tensor& sums, Tensor& maxes);
#endif

}  // namespace zt::ops
