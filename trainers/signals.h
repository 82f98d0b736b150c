#pragma once
// The instability signals of one log step (issue 25; Wortsman et al. 2023), measured while the
// training step runs and read once at its end. Nothing of this runs on other steps.
//
//   logits_absmax, logits_mean, logits_std   of the head's output h W^T over every token of the
//       step (all micro-batches, all data-parallel ranks) and the real vocabulary (the padding
//       columns left out; the tensor-parallel shards together); before any soft-cap. std is the
//       population one.
//   attn_score_max, attn_score_max/layer_<i>  the largest pre-softmax score q.k / sqrt(D) over
//       causal pairs, every head, every sequence: the whole model's and each layer's
//       (models/attention_score_max.h).
//   grad_norm/<group>     L2 norm of the group's gradient before clipping (trainers/grad_clip.h)
//   update_ratio/<group>  ||p_new - p_old|| / ||p_new|| over the group's parameters (the same as
//       the ratio of their RMS values), this step's AdamW update with clipping and weight decay.
//
// Groups: embedding, attention, mlp, norm, head (models/parameter_group.h), those the model has.
// Under tensor parallelism shards add up over the group (replicated tensors once), under ZeRO
// the data-parallel ranks' pieces too; every rank ends with the same values.
#include <string>
#include <utility>
#include <vector>

#include "models/model.h"
#include "trainers/adamw.h"
#include "trainers/parameter_buckets.h"
#include "trainers/parallel_context.h"

namespace zt {

class StepSignals {
 public:
  StepSignals(const Model& model, const ParallelContext& par);
  StepSignals(const StepSignals&) = delete;
  StepSignals& operator=(const StepSignals&) = delete;

  // Where the head loss adds each micro-batch's logit statistics (LossOptions::logit_moments).
  ops::Moments* logits() { return &logits_; }
  // The probe each micro-batch's forward reports its attention inputs to (Model::ScoreProbe).
  AttentionScoreMax* scores() { return &scores_; }
  // After the gradients are complete (data-parallel reduction done): the gradient of each piece
  // of `layout` (under ZeRO this rank's shard).
  void add_gradients(const std::vector<Parameter>& params, const ParameterBuckets& layout,
                     const PieceGradient& gradient);
  // Around the optimizer step (after_update once the weights are whole again): a copy of the
  // f32 master values this rank updates (AdamW::master of the pieces of its layout: every
  // parameter, or under ZeRO this rank's shard; memory: 4 bytes per element, held until
  // after_update), then the update's norms per group.
  void before_update(const AdamW& adam);
  void after_update(const std::vector<Parameter>& params, const AdamW& adam);

  // Reduces over the groups and reads the device values: the fields above, named.
  std::vector<std::pair<std::string, double>> finish();

 private:
  const Model& model_;
  const ParallelContext& par_;
  ops::Moments logits_;
  AttentionScoreMax scores_;
  std::vector<std::pair<ParamGroup, double>> grad_norms_;
  std::vector<Tensor> before_;
  std::vector<std::pair<ParamGroup, double>> update_ratios_;
};

}  // namespace zt
