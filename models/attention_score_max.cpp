#include "models/attention_score_max.h"

#include <algorithm>
#include <cmath>

#include "framework/autograd/grad_mode.h"
#include "framework/error.h"
#include "ops/matmul.h"

namespace zt {

AttentionScoreMax::AttentionScoreMax(int64_t n_layer, Device device, int64_t chunk_scores)
    : device_(device), chunk_scores_(chunk_scores), scale_(static_cast<size_t>(n_layer), 1.0) {
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
  // Key/value heads per product: the scores of a chunk, [kv heads, group * T, T], stay within
  // chunk_scores_ values (by default 2^26, 256 MiB in f32).
  const int64_t per_chunk = std::clamp<int64_t>(chunk_scores_ / std::max<int64_t>(1, group * T * T), 1, Hkv);
  for (int64_t b = 0; b < B; ++b) {
    const Tensor seq = qkv.select(0, b).to(DType::f32);  // [T, (H + 2 Hkv) D]
    for (int64_t g0 = 0; g0 < Hkv; g0 += per_chunk) {
      const int64_t m = std::min(per_chunk, Hkv - g0);
      // Query heads g0 * group ... are adjacent columns: [T, m * group, D] -> [m, group * T, D],
      // row i * T + t of block j the query of head (g0 + j) * group + i at position t.
      const Tensor q = seq.slice(1, g0 * group * D, (g0 + m) * group * D)
                           .reshape({T, m * group, D})
                           .transpose(0, 1)
                           .contiguous()
                           .reshape({m, group * T, D});
      const Tensor k = seq.slice(1, (H + g0) * D, (H + g0 + m) * D).reshape({T, m, D}).transpose(0, 1).contiguous();
      const Variable scores = ops::matmul(Variable(q), Variable(k), false, true);  // [m, group * T, T]
      ops::accumulate_moments(scores.tensor().reshape({m * group * T, T}), T, /*causal_period=*/T,
                              layers_[static_cast<size_t>(layer)]);
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
