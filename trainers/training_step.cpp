#include "trainers/training_step.h"

#include <cmath>
#include <optional>
#include <vector>

#include "framework/autograd/engine.h"
#include "framework/error.h"
#include "ops/cross_entropy.h"
#include "trainers/grad_clip.h"
#include "trainers/loss_options.h"
#include "trainers/loss_stats.h"
#include "trainers/signals.h"

namespace zt {

int64_t micro_batch_rows(const Config& c, const ParallelLayout& l) {
  ZT_CHECK(c.train.batch_size % l.dp_size == 0, "train.batch_size ", c.train.batch_size,
           " (sequences per micro-batch over all data-parallel ranks) does not divide by the ", l.dp_size,
           " data-parallel ranks (", l.describe(), "); choose a multiple of ", l.dp_size);
  return c.train.batch_size / l.dp_size;
}

MemoryEstimate rank_training_memory(const Config& c, const ParallelLayout& l, DType compute, bool fused_head) {
  MemoryEstimate need = estimate_training_memory(c.model, micro_batch_rows(c, l), compute, fused_head);
  for (double* part : {&need.parameters, &need.gradients, &need.optimizer, &need.activations})
    *part /= static_cast<double>(l.tp_size);
  if (c.parallel.zero_stage >= 1) {
    need.optimizer /= static_cast<double>(l.dp_size);
    // bf16 compute: the f32 masters are sharded with the optimizer state (trainers/adamw.h),
    // only the bf16 weights stay whole.
    if (compute != DType::f32)
      need.parameters -= 4.0 * static_cast<double>(c.model.num_parameters()) / static_cast<double>(l.tp_size) *
                         (1.0 - 1.0 / static_cast<double>(l.dp_size));
  }
  if (c.parallel.zero_stage >= 2) need.gradients /= static_cast<double>(l.dp_size);
  return need;
}

std::string training_memory_remedies(const Config& c) {
  std::string r = "make the model (model.n_layer, model.d_model, model.vocab_size) or train.batch_size smaller";
  if (c.model.activation_checkpointing != "block") r += ", recompute activations (train.activation_checkpointing: block)";
  r += ", or spread it over more ranks (parallel.tensor_parallel_size";
  if (c.parallel.zero_stage < 2)
    r += "; parallel.zero_stage " + std::string(c.parallel.zero_stage == 0 ? "1 or 2" : "2") +
         " shards the optimizer state" + (c.parallel.zero_stage == 0 ? " and gradients" : " and the gradients too") +
         " over the data-parallel ranks";
  return r + ")";
}

std::unique_ptr<AdamW> make_optimizer(const Config& c, Model& model, const ParallelLayout& l) {
  const int shards = c.parallel.zero_stage >= 1 ? l.dp_size : 1;
  auto layout = std::make_shared<const ParameterBuckets>(
      model.parameters().all(), static_cast<int64_t>(c.parallel.bucket_mb * 1024.0 * 1024.0), shards,
      shards > 1 ? l.dp_rank : 0);
  // Sharded bf16 training: AdamW keeps the f32 masters of its shard, the model bf16 weights.
  const DType weights = shards > 1 && parse_dtype(c.train.dtype) == DType::bf16 ? DType::bf16 : DType::f32;
  return std::make_unique<AdamW>(
      model.parameters().all(),
      AdamWOptions{c.optim.weight_decay, c.optim.beta1, c.optim.beta2, c.optim.eps}, std::move(layout), weights);
}

bool fused_head_for_run(const Config& c, const ParallelLayout& l, DType compute, Device device) {
  if (c.loss.fused_head != "auto") return c.loss.fused_head == "on";
  const double available = available_memory(device);
  const double unfused = rank_training_memory(c, l, compute, false).total();
  return available > 0 && unfused > available && rank_training_memory(c, l, compute, true).total() < unfused;
}

TrainingStep::TrainingStep(const Config& config, Model& model, AdamW& adam, const ParallelContext& par, DType compute,
                           bool fused_head)
    : cfg_(config), model_(model), adam_(adam), par_(par), compute_(compute), fused_head_(fused_head) {
  rows_ = zt::micro_batch_rows(cfg_, par.layout);
  if (par.layout.dp_size > 1) {
    dp_grads_ = std::make_unique<DataParallelGradients>(model_.parameters().all(), par.dp, adam_.layout_shared(),
                                                        static_cast<int>(cfg_.parallel.zero_stage));
  }
}

void TrainingStep::zero_grad() {
  if (dp_grads_) dp_grads_->zero_grad();
  else model_.parameters().zero_grad();
}

// After the step the gradients are dead weight: without data parallelism they are dropped
// (their memory is free between steps); the buckets of data parallelism stay allocated and
// are zeroed once, by the next step's zero_grad(), not here as well.
void TrainingStep::release_grads() {
  if (!dp_grads_) model_.parameters().zero_grad();
}

StepMetrics TrainingStep::run(const std::function<data::Batch()>& next, double lr, double z_loss_weight,
                              bool skip_nonfinite, const std::function<void(const char*)>& phase,
                              bool signals) {
  auto mark = [&](const char* p) {
    if (phase) phase(p);
  };
  const int64_t accum = cfg_.train.grad_accum;
  // Every target of the global batch counts (see the header): the loss is their mean.
  const double global_targets = static_cast<double>(cfg_.train.batch_size * accum * cfg_.model.seq_len);
  StepMetrics m;
  m.lr = lr;
  m.z_loss_weight = z_loss_weight;
  zero_grad();
  // Dropout masks from (seed, step, data-parallel rank): nothing to checkpoint, and resuming
  // reproduces them.
  dropout_gen_.reseed(static_cast<uint64_t>(cfg_.train.seed) ^ 0x64726f706f7574ull ^
                      (static_cast<uint64_t>(adam_.steps_taken()) * 0x9e3779b97f4a7c15ull) ^
                      (static_cast<uint64_t>(par_.layout.dp_rank) << 48));
  LossStats stats(par_.device);
  std::optional<StepSignals> sig;  // log steps only
  if (signals) sig.emplace(model_, par_);
  // Bad targets raise a deferred device-side check (on CUDA); read once the micro-batches are
  // issued, before anything is applied, so no host read separates the micro-batches.
  std::vector<ops::CrossEntropyResult::TargetCheck> checks;
  for (int64_t a = 0; a < accum; ++a) {
    data::Batch b = next();
    mark("fwd");
    const Tensor ids = b.inputs.to(par_.device);
    const Tensor targets = b.targets.to(par_.device).reshape({-1});
    const Model::HeadInputs head = [&] {
      const Model::ScoreProbe probe(model_, sig ? sig->scores() : nullptr);  // log steps: the scores
      return model_.head_inputs(ids, compute_, /*training=*/true, dropout_gen_);
    }();
    mark("loss");
    LossOptions options = training_loss_options(cfg_.loss, z_loss_weight, 1.0 / global_targets, fused_head_);
    if (sig) options.logit_moments = sig->logits();
    ops::CrossEntropyResult r = model_.head_loss(head, targets, options);
    stats.add(r);
    checks.push_back(r.target_check);
    mark("bwd");
    const bool last = a + 1 == accum;
    if (dp_grads_ && dp_grads_->syncs(last)) {
      // Each bucket's reduction starts once backward has filled it (the last micro-batch; all
      // of them under ZeRO-2).
      LeafGradReadyHookGuard sync(dp_grads_->sync_hook());
      r.loss.backward();
    } else {
      r.loss.backward();
    }
    if (dp_grads_) dp_grads_->finish_micro_batch(last);
  }
  mark("optim");
  for (const auto& c : checks) c.check();
  const LossStats::Totals t = stats.reduce(*par_.dp);
  m.ce_loss = t.mean(t.ce_sum);
  m.z_loss = t.mean(t.z_sum);
  m.loss = m.ce_loss + m.z_loss;
  m.lse_mean = t.mean(t.lse_sum);
  m.lse_max = t.lse_max;
  const bool sharded = adam_.layout().sharded();
  const PieceGradient gradient = dp_grads_ ? dp_grads_->gradient() : gradient_from_params(model_.parameters().all());
  m.grad_norm = sharded ? sharded_grad_norm(model_.parameters().all(), adam_.layout(), gradient, par_.dp, par_.tp)
                        : global_grad_norm(model_.parameters().all(), par_.tp);
  if (sig) sig->add_gradients(model_.parameters().all(), adam_.layout(), gradient);
  if (!std::isfinite(m.loss) || !std::isfinite(m.grad_norm)) {
    m.skipped = skip_nonfinite;
    if (sig) m.signals = sig->finish();
    release_grads();
    mark("");
    return m;  // no update; the caller stops or reports the skip
  }
  // Clipping rides on the update (the factor scales each gradient as AdamW reads it): no pass
  // over the gradients of its own, and the gradients themselves stay unscaled.
  if (sig) sig->before_update(adam_);
  adam_.step(lr, clip_factor(cfg_.optim.grad_clip, m.grad_norm), gradient);
  if (sharded) dp_grads_->all_gather_weights(adam_.weight_buckets());
  if (sig) {  // the update of the pieces this rank owns
    sig->after_update(model_.parameters().all(), adam_);
    m.signals = sig->finish();
  }
  release_grads();
  mark("");
  return m;
}

}  // namespace zt
