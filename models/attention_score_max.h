#pragma once
// The largest pre-softmax attention score per layer, the signal of attention-logit growth
// (Wortsman et al. 2023; what QK-norm fixes): max over batch, heads and causal pairs t' <= t of
// q_t . k_t' / sqrt(D), for exactly the q and k the attention op reads (after QK-norm and RoPE
// where the family has them). Attached to a model (Model::ScoreProbe) for the forwards of a
// log step only; each layer hands it its qkv and it recomputes the scores one sequence at a
// time, as many key/value heads per batched product as keep the scores within 2^26 values,
// with the tested matmul op (f32 products; no TF32), reducing them on the device without a host
// read. Cost per layer: the attention's q k^T product again (2 B H T^2 D FLOPs) and a transient
// f32 score block of at most 256 MiB (at least one key/value head's [H / Hkv * T, T]).
#include <cstdint>
#include <vector>

#include "framework/tensor.h"
#include "ops/moments.h"

namespace zt {

class AttentionScoreMax {
 public:
  // `chunk_scores`: the most score values one product makes (at least one key/value head's).
  AttentionScoreMax(int64_t n_layer, Device device, int64_t chunk_scores = int64_t{1} << 26);

  // qkv [B, T, (H + 2 Hkv) D] as the attention op takes it (query heads, then key heads, then
  // value heads; query head h uses key head h / (H / Hkv)); this rank's heads.
  void observe(int64_t layer, const Tensor& qkv, int64_t n_head, int64_t n_kv_head);

  // f64 [n_layer] on the device: each layer's largest scaled score so far (-inf for a layer
  // never observed, NaN when a score was). All-reduce it with max over the tensor- and
  // data-parallel groups for the whole model's value.
  Tensor maxima() const;

 private:
  Device device_;
  int64_t chunk_scores_;
  std::vector<ops::Moments> layers_;
  std::vector<double> scale_;  // 1 / sqrt(D) per layer, set when observed
};

}  // namespace zt
