#pragma once
// One optimizer step, the one `train` runs and `bench_step` times:
//
//   for each of grad_accum micro-batches (this rank's slice of the global micro-batch):
//     Model::loss: forward -> logits [tokens, Vp/T] -> ops::cross_entropy (vocab-parallel over the
//     tensor-parallel group, z-loss, smoothing; reduction sum scaled by 1 / the global batch's
//     target tokens, inside the kernel's gradient scale) -> backward (gradients accumulate;
//     the last micro-batch's backward launches the data-parallel bucket all-reduces)
//   wait for the all-reduces -> global grad norm (tensor-parallel shards summed) -> non-finite?
//   -> AdamW, with clipping's factor applied as it reads the gradients
//   (ZeRO, parallel.zero_stage 1 or 2: reduce-scatters instead of all-reduces, the norm over
//   the shards, AdamW on this rank's shard, then the weights all-gathered; data_parallel.h)
//
// The loss is the mean over every target token of the global batch (all micro-batches, all
// data-parallel ranks), as torchtitan defines it, not a mean of per-micro-batch means; the
// same number whatever the layout. (Shards hold token ids only, never ignore_index, which
// config validation keeps outside the vocabulary, so every target counts.) The logged
// statistics (ce, z-loss, lse mean and max) are reduced over the data-parallel group, so every
// rank holds the global values and takes the same decisions.
#include <cstdint>
#include <functional>
#include <memory>

#include "framework/tensor.h"
#include "models/model.h"
#include "trainers/adamw.h"
#include "trainers/config.h"
#include "trainers/data/data_loader.h"
#include "trainers/data_parallel.h"
#include "trainers/memory_estimate.h"
#include "trainers/metrics.h"
#include "trainers/parallel_context.h"

namespace zt {

// Sequences of one micro-batch on this rank: train.batch_size / D (zt::Error naming both
// when D data-parallel ranks do not divide the global micro-batch).
int64_t micro_batch_rows(const Config& config, const ParallelLayout& layout);

// loss.fused_head for this run, decided once before the model is built: on, off, or for auto
// whether the step with the unfused head (its [tokens, padded vocab / T] logits whole) would not
// fit in the device's free memory while the fused one would need less. Errors name the key.
bool fused_head_for_run(const Config& config, const ParallelLayout& layout, DType compute, Device device);
// The memory estimate of one rank's step: 1/T of the model and its activations under T-way
// tensor parallelism (a lower bound), with the head as `fused_head` says; under ZeRO over D
// data-parallel ranks 1/D of the optimizer state (stage 1; with bf16 compute of the f32 master
// weights too) and of the gradients (stage 2).
MemoryEstimate rank_training_memory(const Config& config, const ParallelLayout& layout, DType compute, bool fused_head);

// The keys that would shrink this config's step, for memory_shortfall: the model, the batch,
// and those of activation checkpointing, tensor parallelism and ZeRO not already at their most.
std::string training_memory_remedies(const Config& config);

// The optimizer of a run: AdamW over the model's parameters in flat buckets of
// parallel.bucket_mb, its state sharded over the data-parallel ranks when parallel.zero_stage
// is 1 or 2 (trainers/parameter_buckets.h), with bf16 compute the f32 master weights too (the
// model's leaves become bf16 weights: trainers/adamw.h). TrainingStep reduces the gradients
// into the same buckets.
std::unique_ptr<AdamW> make_optimizer(const Config& config, Model& model, const ParallelLayout& layout);

class TrainingStep {
 public:
  // `model`, `adam` and `par` must outlive the step; `adam` comes from make_optimizer. Data
  // parallelism (par.dp of more than one rank) puts the gradients into its buckets here.
  // `fused_head`: the head and the loss as one op (fused_head_for_run).
  TrainingStep(const Config& config, Model& model, AdamW& adam, const ParallelContext& par, DType compute,
               bool fused_head);

  // The step's micro-batches come from `next` (grad_accum calls, each this rank's [B/D, T]
  // inputs and targets, on any device). Fills loss, ce_loss, z_loss, lse_mean, lse_max,
  // grad_norm, lr, z_loss_weight and skipped. A non-finite loss or norm makes no update.
  // `phase` (optional) is called at "fwd", "loss", "bwd", "optim" and "" (done) for timing.
  // `signals`: a log step; also measures the instability signals (trainers/signals.h) into
  // StepMetrics::signals, at the cost that header names. Other steps do none of that work.
  StepMetrics run(const std::function<data::Batch()>& next, double lr, double z_loss_weight, bool skip_nonfinite,
                  const std::function<void(const char*)>& phase = nullptr, bool signals = false);

  void zero_grad();
  int64_t micro_batch_rows() const { return rows_; }  // B / D sequences per micro-batch on this rank
  bool fused_head() const { return fused_head_; }
  // Bytes of gradient storage this rank keeps between micro-batches (0: allocated by backward).
  int64_t gradient_bytes() const { return dp_grads_ ? dp_grads_->gradient_bytes() : 0; }

 private:
  void release_grads();

  const Config& cfg_;
  Model& model_;
  AdamW& adam_;
  const ParallelContext& par_;
  DType compute_;
  bool fused_head_ = false;
  int64_t rows_ = 0;
  Generator dropout_gen_;
  std::unique_ptr<DataParallelGradients> dp_grads_;
};

}  // namespace zt
