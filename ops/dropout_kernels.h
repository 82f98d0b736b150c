#pragma once
// CPU kernels behind ops/dropout.h (internal to ops/).
#include <cstdint>
#include <vector>

#include "framework/random.h"
#include "framework/tensor.h"

namespace zt::ops {

// keep[i] = 1 when element i survives: gen.uniform() >= p, drawn in element order, one draw
// per element (so a seed fixes the mask on every platform).
std::vector<uint8_t> dropout_mask(int64_t n, double p, Generator& gen);

// out = x * keep / (1 - p), elementwise; the forward and the backward (x = grad) alike.
Tensor dropout_apply_cpu(const Tensor& x, const std::vector<uint8_t>& keep, double p);

}  // namespace zt::ops
