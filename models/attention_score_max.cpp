#include "models/attention_score_max.h"

#include <cmath>

#include "framework/autograd/grad_mode.h"
#include "framework/error.h"
#include "ops/matmul.h"

namespace zt {

AttentionScoreMax::AttentionScoreMax(int64_t n_layer, Device device)
    : device_(device), scale_(static_cast<size_t>(n_layer), 1.0) {
  for (int64_t l = 0; l < n_layer; ++l) layers_.emplace_back(device);
}

void AttentionScoreMax::observe(int64_t layer, const Tensor& qkv, int64_t H, int64_t Hkv) {
  ZT_CHECK(layer >= 0 && layer < static_cast<int64_t>(layers_.size()), "attention score probe: layer ", layer,
           " outside [0, ", layers_.size(), ")");
  ZT_CHECK(qkv.dim() == 3 && Hkv > 0 && H % Hkv == 0 && qkv.shape()[2] % (H + 2 * Hkv) == 0,
           "attention score probe: qkv ", shape_str(qkv.shape()), " does not hold ", H, " query and ", Hkv,
           " key/value heads");
  NoGradGuard no_grad;
  const int64_t B = qkv.shape()[0], T = qkv.shape()[1], D = qkv.shape()[2] / (H + 2 * Hkv), group = H / Hkv;
  // The max of s * q.k is s times the max of q.k (s > 0): the scale is applied once, at the end.
  scale_[static_cast<size_t>(layer)] = 1.0 / std::sqrt(static_cast<double>(D));
  for (int64_t b = 0; b < B; ++b) {
    const Tensor seq = qkv.select(0, b).to(DType::f32);  // [T, (H + 2 Hkv) D]
    for (int64_t g = 0; g < Hkv; ++g) {
      // The group's query heads stacked: [group * T, D], row i * T + t is head i's query at t.
      const Tensor q = seq.slice(1, g * group * D, (g + 1) * group * D)
                           .reshape({T, group, D})
                           .transpose(0, 1)
                           .contiguous()
                           .reshape({group * T, D});
      const Tensor k = seq.slice(1, (H + g) * D, (H + g + 1) * D).contiguous();  // [T, D]
      const Variable scores = ops::matmul(Variable(q), Variable(k), false, true);  // [group * T, T]
      ops::accumulate_moments(scores.tensor(), T, /*causal_period=*/T, layers_[static_cast<size_t>(layer)]);
    }
  }
}

Tensor AttentionScoreMax::maxima() const {
  Tensor out = Tensor::empty({static_cast<int64_t>(layers_.size())}, DType::f64, device_);
  for (size_t l = 0; l < layers_.size(); ++l) {
    Tensor m = layers_[l].maxes.slice(0, 0, 1).clone();
    m.scale_(scale_[l]);
    out.slice(0, static_cast<int64_t>(l), static_cast<int64_t>(l) + 1).copy_(m);
  }
  return out;
}

}  // namespace zt
