#pragma once
// The seam between a model family and everything above it (trainer, training step,
// checkpoints, generate, bench_step, the memory estimate): they hold a Model and ask it,
// never name a family. A family implements head_inputs() and describe(); the rest is shared.
//
//   ids [B, T] -> head_inputs(): h [B*T, C] (after the final norm; under tensor parallelism
//   every rank holds it whole) and W [Vp/T, C] -> head_loss(): logits = h W^T [B*T, Vp/T]
//   (h through copy_to, so its gradient is summed over the group) -> vocab-parallel loss; or
//   both in one op (the fused head, which sums h's gradient over the group itself).
//
// loss() is "forward to the loss": the one place that turns LossOptions into the loss op's
// options (num_classes, the tensor-parallel group), so training and evaluation cannot drift
// apart. Adding a family: docs/architecture.md, "Adding a model family".
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "framework/autograd/variable.h"
#include "framework/random.h"
#include "models/attention_score_max.h"
#include "models/model_config.h"
#include "models/parameter_registry.h"
#include "ops/cross_entropy.h"
#include "ops/moments.h"

namespace zt {

class ProcessGroup;

// What a caller chooses about the loss; the model adds what it knows (its vocabulary, its group).
struct LossOptions {
  // z-loss, smoothing, soft-cap, ignore_index, reduction, scale, inplace_grad; the model sets
  // num_classes (its real vocabulary) and group (its tensor-parallel group).
  ops::CrossEntropyOptions loss;
  // The head product and the loss as one op (ops::linear_cross_entropy): the [tokens, vocab]
  // logits never exist; same loss and gradients up to rounding.
  bool fused_head = false;
  // When set (log steps), the logits' statistics are added to it (Model::logit_moments): the
  // unfused head's from its logits before the loss reads them, the fused head's recomputed.
  ops::Moments* logit_moments = nullptr;
};

class Model {
 public:
  virtual ~Model() = default;

  // What the LM head needs, for ids [B, T] (i32/i64 in [0, vocab_size), 1 <= T <= seq_len, on the
  // model's device), in `compute` dtype: the final hidden states [B*T, C] (after the final norm)
  // and the head's weight [padded_vocab / T, C] (this rank's rows of the tied embedding table or
  // of the head's own matrix; one cast serves the lookup and the head). Dropout is active when
  // training and model.dropout > 0, drawing from `dropout_gen`.
  struct HeadInputs {
    Variable hidden, weight;
  };
  virtual HeadInputs head_inputs(const Tensor& ids, DType compute, bool training, Generator& dropout_gen) const = 0;
  // "GPT-2" or "llama (rmsnorm, swiglu, rope, qk_norm, gqa 4/12, untied)": for start-up lines.
  virtual std::string describe() const = 0;

  // Logits [B*T, padded_vocab / T]: columns >= vocab_size are padding (sample from the first
  // vocab_size only; models/sampling.h).
  Variable forward(const Tensor& ids, DType compute, bool training, Generator& dropout_gen) const;
  // The loss of ids -> targets ([B*T] or [B, T], global ids), with its logging outputs:
  // head_loss(head_inputs(...)). The training step calls the two halves itself to time them.
  ops::CrossEntropyResult loss(const Tensor& ids, const Tensor& targets, const LossOptions& options, DType compute,
                               bool training, Generator& dropout_gen) const;
  // The head and the loss on head_inputs' outputs: logits = hidden W^T, then the vocab-parallel
  // cross-entropy over the real vocabulary (num_classes = vocab_size, the model's group).
  ops::CrossEntropyResult head_loss(const HeadInputs& in, const Tensor& targets, const LossOptions& options) const;

  // Instability signals, for log steps only (trainers/signals.h).
  // The logits of head_inputs' outputs, hidden W^T, over the real vocabulary's columns on this
  // rank (not the padding), added to `acc` without a host read, recomputed in chunks of rows:
  // one more head product forward, with a transient chunk of at most 2^26 logits. (head_loss
  // with LossOptions::logit_moments calls it for the fused head, whose logits never exist whole;
  // the unfused head's are read where they are.)
  void logit_moments(const HeadInputs& in, ops::Moments& acc) const;
  // While `probe` is attached (non-null), every forward hands each layer's attention input to it.
  void attach_score_probe(AttentionScoreMax* probe) const { score_probe_ = probe; }
  // Attaches a probe for its lifetime. The training step holds one around each micro-batch's
  // forward only, so a backward that recomputes blocks (activation checkpointing) does not
  // observe (and pay for) the scores again.
  class ScoreProbe {
   public:
    ScoreProbe(const Model& model, AttentionScoreMax* probe) : model_(model) { model_.attach_score_probe(probe); }
    ~ScoreProbe() { model_.attach_score_probe(nullptr); }
    ScoreProbe(const ScoreProbe&) = delete;
    ScoreProbe& operator=(const ScoreProbe&) = delete;

   private:
    const Model& model_;
  };

  const ModelConfig& config() const { return config_; }
  ParameterRegistry& parameters() { return params_; }
  const ParameterRegistry& parameters() const { return params_; }
  Device device() const { return device_; }
  const std::shared_ptr<ProcessGroup>& tp_group() const { return tp_; }
  int tp_size() const;
  int tp_rank() const;
  int64_t num_parameters() const { return config_.num_parameters(); }  // the whole model, all shards
  double flops_per_token() const { return config_.flops_per_token(); }

 protected:
  Model(const ModelConfig& config, Device device, std::shared_ptr<ProcessGroup> tp_group);
  // ids checks every family shares; returns (B, T).
  std::pair<int64_t, int64_t> check_ids(const Tensor& ids, DType compute) const;
  // The n_layer transformer blocks on x, block l being x -> r = half(l, attention, x) ->
  // half(l, mlp, r), as config_.activation_checkpointing says: none, the halves as they are;
  // block, each whole block one checkpoint region (only its input is kept for backward); mlp,
  // each second half (norm, MLP, residual add) one region. Dropout draws from `gen`, which a
  // region rewinds when it recomputes. The regions keep `half` for backward: it must capture
  // nothing that dies with the forward (`gen` by reference, the rest by value).
  enum class BlockHalf { attention, mlp };
  using BlockHalves = std::function<Variable(int64_t layer, BlockHalf which, const Variable& in)>;
  Variable blocks(const BlockHalves& half, Variable x, Generator& gen) const;
  // Of this rank's `local` head rows (global ids rank * local ...), how many are the real
  // vocabulary's, not padding.
  int64_t real_columns(int64_t local) const;
  // Each family calls this with the qkv its attention op reads ([B, T, (H + 2 Hkv) D], this
  // rank's heads), for the attached probe if any.
  void observe_attention(int64_t layer, const Variable& qkv, int64_t n_head, int64_t n_kv_head) const {
    if (score_probe_) score_probe_->observe(layer, qkv.tensor(), n_head, n_kv_head);
  }

  ModelConfig config_;
  Device device_;
  std::shared_ptr<ProcessGroup> tp_;
  ParameterRegistry params_;

 private:
  mutable AttentionScoreMax* score_probe_ = nullptr;
};

// The family model.arch names, initialised from `init` (same seed, same model, whatever the
// tensor-parallel size) on `device`; `tp_group` (null or one rank: the whole model) splits it.
std::unique_ptr<Model> make_model(const ModelConfig& config, Generator& init, Device device = Device::cpu(),
                                  std::shared_ptr<ProcessGroup> tp_group = nullptr);

// "124,475,904 (124.48M)"
std::string format_parameter_count(int64_t n);

}  // namespace zt
