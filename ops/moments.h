#pragma once
// Statistics of a matrix's elements, accumulated on the tensor's device without a host read:
// what the trainer's instability signals are made of (the head's logits, the attention scores
// before the softmax, the size of a weight update). Sums in f64 whatever the input dtype.
#include <cstdint>

#include "framework/tensor.h"

namespace zt::ops {

// The running totals, f64 on one device: sums = {sum x, sum x^2, count, NaN count},
// maxes = {max x, max |x|} (-inf and 0 while empty). Both all-reduce as they are (sums with
// sum, maxes with max) over a process group.
struct Moments {
  Tensor sums, maxes;
  explicit Moments(Device device);
};

// Adds the elements of x ([R, W], f32/bf16/f64, rows may be strided: a column slice of a wider
// matrix) to `acc`: the first `cols` columns of each row (cols <= W); with `causal_period` P > 0
// only the elements (r, c) with c <= r mod P (the causal part of stacked [P, P] score blocks).
// A NaN element makes both maxes NaN.
void accumulate_moments(const Tensor& x, int64_t cols, int64_t causal_period, Moments& acc);

}  // namespace zt::ops
