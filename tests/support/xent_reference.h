#pragma once
// Float64 reference of the cross-entropy op (docs/cross_entropy.md), written straight from
// the formulas with no shared code, for the op, TP and xent tool tests.
#include <cstdint>
#include <vector>

#include "framework/tensor.h"

namespace zt::test {

struct XentReference {
  std::vector<double> row_loss, lse, z_row;  // [N], 0 on ignored rows
  std::vector<double> grad;                  // [N * W]: d(sum_i w_i row_i)/dx, 0 at padding columns
  double loss = 0;                           // mean or sum (undefined for none)
  double ce_sum = 0, z_sum = 0;
  int64_t count = 0;
};

// x: [N, W] values (any dtype, read as f64); y: [N]. reduction: "mean" | "sum" | "none".
// row_weights: upstream gradient per row for "none" (empty: ones); seed multiplies mean/sum.
// num_classes: V, the classes are columns [0, V) and columns [V, W) padding that the formulas
// never see (-1: V = W). softcap: each logit x is replaced by cap tanh(x / cap) (-inf kept)
// and the gradient multiplied by 1 - tanh^2(x / cap); 0: off.
XentReference xent_reference(const Tensor& x, const std::vector<int64_t>& y, double smoothing, double z,
                             int64_t ignore_index, const std::string& reduction, double seed = 1.0,
                             const std::vector<double>& row_weights = {}, int64_t num_classes = -1,
                             double softcap = 0.0);

}  // namespace zt::test
