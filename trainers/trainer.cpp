#include "trainers/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <sstream>

#include "framework/autograd/grad_mode.h"
#include "framework/error.h"
#include "models/model.h"
#include "ops/cross_entropy.h"
#include "trainers/adamw.h"
#include "trainers/checkpoint.h"
#include "trainers/data/data_loader.h"
#include "trainers/loss_options.h"
#include "trainers/lr_schedule.h"
#include "trainers/memory_estimate.h"
#include "trainers/metrics.h"
#include "trainers/model_state.h"
#include "trainers/nonfinite_policy.h"
#include "trainers/parallel_context.h"
#include "trainers/preemption.h"
#include "trainers/progress.h"
#include "trainers/resume_check.h"
#include "trainers/run_dir.h"
#include "trainers/sharded_checkpoint.h"
#include "trainers/training_step.h"
#include "trainers/z_loss_schedule.h"

namespace zt {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Lines of `a` that are not in `b` (resolved configs, comment line dropped).
std::vector<std::string> lines_not_in(const std::string& a, const std::string& b) {
  auto split = [](const std::string& t) {
    std::vector<std::string> out;
    std::istringstream in(t);
    std::string line;
    while (std::getline(in, line))
      if (!line.empty() && line[0] != '#') out.push_back(line);
    return out;
  };
  const auto lb = split(b);
  const std::set<std::string> sb(lb.begin(), lb.end());
  std::vector<std::string> out;
  for (const auto& l : split(a))
    if (!sb.count(l)) out.push_back(l);
  return out;
}

class Trainer {
 public:
  Trainer(const Config& cfg, const TrainOptions& opts)
      : cfg_(cfg),
        opts_(opts),
        run_dir_(cfg.log.out_dir),
        par_(make_parallel_context(cfg, config_to_yaml(cfg))),
        out_(par_.layout.is_logger() ? opts.out : null_output()),
        progress_(out_, opts.terminal < 0 ? Progress::is_terminal(out_) : opts.terminal == 1, cfg.train.max_steps,
                  cfg.log.log_every),
        nonfinite_(cfg.train.on_nonfinite, cfg.train.max_skipped_consecutive, cfg.train.max_skipped_total) {
    if (cfg_.train.threads > 0) omp_set_num_threads(static_cast<int>(cfg_.train.threads));
    device_ = par_.device;
    validate_for_device(cfg_, device_);  // train.device: auto is resolved only now
    compute_ = parse_dtype(cfg_.train.dtype);
    tokens_per_step_ = cfg_.train.batch_size * cfg_.train.grad_accum * cfg_.model.seq_len;
    const ParallelLayout& l = par_.layout;
    // A config that cannot fit is refused before anything is allocated. Per rank: its rows of
    // the micro-batch, and at least 1/T of the model and its activations under T-way tensor
    // parallelism (still a lower bound).
    fused_head_ = fused_head_for_run(cfg_, l, compute_, device_);
    if (l.world_size > 1) {  // auto sees each rank's free memory: every rank takes one answer
      Tensor t = Tensor::from_vector(std::vector<int64_t>{fused_head_ ? 1 : 0}, {1}, device_);
      par_.world->all_reduce(t, ReduceOp::max);
      fused_head_ = t.to_vector<int64_t>()[0] == 1;
    }
    check_memory_fits(rank_training_memory(cfg_, l, compute_, fused_head_), device_, "training this config",
                      training_memory_remedies(cfg_));

    // Data first: a missing or bad shard should fail before anything is written. Each
    // data-parallel rank reads its own rows of every global micro-batch.
    data::DataLoaderOptions d;
    d.batch_size = micro_batch_rows(cfg_, l);
    d.seq_len = cfg_.model.seq_len;
    d.seed = static_cast<uint64_t>(cfg_.train.seed);
    d.vocab_size = cfg_.model.vocab_size;
    d.rank = l.dp_rank;
    d.world = l.dp_size;
    d.shards = cfg_.data.train;
    d.shuffle = true;
    train_loader_ = std::make_unique<data::DataLoader>(d);
    d.shards = cfg_.data.val;
    d.shuffle = false;
    val_loader_ = std::make_unique<data::DataLoader>(d);

    Generator init(static_cast<uint64_t>(cfg_.train.seed));
    model_ = make_model(cfg_.model, init, device_, par_.tp);
    adam_ = make_optimizer(cfg_, *model_, par_.layout);
    step_runner_ = std::make_unique<TrainingStep>(cfg_, *model_, *adam_, par_, compute_, fused_head_);
    lr_ = LrSchedule{cfg_.optim.lr, cfg_.optim.min_lr, cfg_.schedule.warmup_steps, cfg_.train.max_steps};
    z_ = ZLossSchedule{cfg_.loss.z_loss_schedule, cfg_.loss.z_loss_weight, cfg_.loss.z_loss_start,
                       cfg_.loss.z_loss_warmup_steps};
  }

  TrainSummary run() {
    const PreemptionWatch preemption;  // SIGTERM/SIGUSR1: checkpoint after this step and stop
    start_ = Clock::now();
    const auto start = start_;
    prepare_run_dir();
    announce();
    TrainSummary summary;
    summary.first_step = step_;
    summary.first_val_loss = std::numeric_limits<double>::quiet_NaN();
    summary.last_val_loss = std::numeric_limits<double>::quiet_NaN();
    if (step_ == 0) summary.first_val_loss = summary.last_val_loss = evaluate();

    double avg_step_s = 0;
    int64_t done = 0;
    while (step_ < cfg_.train.max_steps) {
      if (opts_.stop_after > 0 && done >= opts_.stop_after) break;
      const auto t0 = Clock::now();
      StepMetrics m = step_runner_->run([&] { return train_loader_->next(); }, lr_.at(step_), z_.at(step_),
                                        cfg_.train.on_nonfinite == "skip", nullptr,
                                        is_log_step(step_ + 1, cfg_.log.log_every, cfg_.train.max_steps));
      ++step_;
      tokens_ += tokens_per_step_;
      m.step = step_;
      m.tokens = tokens_;
      const double dt = seconds_since(t0);
      avg_step_s = done == 0 ? dt : 0.9 * avg_step_s + 0.1 * dt;
      ++done;
      m.tokens_per_s = static_cast<double>(tokens_per_step_) / dt;  // the global rate
      m.elapsed_s = elapsed_before_ + seconds_since(start);
      if (device_.is_cuda())  // per GPU: the model's FLOPs over every rank's peak
        m.mfu = model_->flops_per_token() * m.tokens_per_s /
                (cfg_.log.peak_tflops * 1e12 * static_cast<double>(par_.layout.world_size));
      if (metrics_) metrics_->write(m.to_json());
      summary.last_loss = m.loss;
      // Non-finite steps: skip (within the limits) or stop, never checkpointing the broken model.
      const NonFinitePolicy::Decision nf = nonfinite_.on_step(std::isfinite(m.loss) && std::isfinite(m.grad_norm));
      if (nf.action == NonFinitePolicy::Action::skip) {
        progress_.event("step " + std::to_string(m.step) + ": non-finite loss " + std::to_string(m.loss) +
                        " or grad_norm " + std::to_string(m.grad_norm) + "; " + nf.reason);
      } else if (nf.action == NonFinitePolicy::Action::stop) {
        progress_.finish();
        ZT_FAIL("non-finite ", std::isfinite(m.loss) ? "gradient norm" : "loss", " at step ", m.step, " (loss ",
                m.loss, ", grad_norm ", m.grad_norm, ", lr ", m.lr, "); stopped: ", nf.reason, ". Metrics are in ",
                run_dir_, "/metrics.jsonl");
      }
      progress_.step(step_, m.loss, m.tokens_per_s, avg_step_s, m.lr, m.grad_norm);

      const bool last = step_ == cfg_.train.max_steps;
      if (last || (cfg_.log.eval_every > 0 && step_ % cfg_.log.eval_every == 0)) summary.last_val_loss = evaluate();
      const bool checkpoint = last || (cfg_.log.checkpoint_every > 0 && step_ % cfg_.log.checkpoint_every == 0 &&
                                       nonfinite_.may_checkpoint());
      if (checkpoint) save_checkpoint(elapsed_before_ + seconds_since(start));
      if (!last) summary.stop_signal = preemption.agreed_signal(*par_.world, device_);
      if (summary.stop_signal) {
        if (!checkpoint && nonfinite_.may_checkpoint()) save_checkpoint(elapsed_before_ + seconds_since(start));
        progress_.event(std::string("stopped by ") + signal_name(summary.stop_signal) + " at step " +
                        std::to_string(step_) + (nonfinite_.may_checkpoint() ? " after its checkpoint" :
                        " without a checkpoint (the newest step was skipped as non-finite)") +
                        "; continue with --resume");
        break;
      }
    }
    progress_.finish();
    summary.last_step = step_;
    summary.seconds = seconds_since(start);
    return summary;
  }

 private:
  // Where ranks other than the logger write their progress: nowhere.
  static std::FILE* null_output() {
    static std::FILE* f = std::fopen("/dev/null", "w");
    return f;
  }

  // The run directory is the logger rank's (0): the lock, the start decision, temp-file
  // cleanup, metrics.jsonl, config.yaml, pruning. Every rank reads the checkpoint it resumes
  // from (the run directory is on a filesystem they all see).
  void prepare_run_dir() {
    const bool logger = par_.layout.is_logger();
    const std::string metrics_path = (fs::path(run_dir_) / "metrics.jsonl").string();
    const std::string ckpt_dir = (fs::path(run_dir_) / "checkpoints").string();
    // Rank 0 decides; the others learn [resume?, the checkpoint's step, the run's identity]
    // from a broadcast. The identity binds a sharded checkpoint's files to one run.
    std::vector<int64_t> decision = {0, -1, new_run_id()};
    CheckpointChoice choice;
    RunStart start = RunStart::fresh;
    if (logger) {
      // Lock the directory for the life of the run, decide fresh/overwrite/resume from what
      // it holds, drop temp files of interrupted writes, pick the newest intact checkpoint.
      lock_.emplace(run_dir_);
      start = plan_run_start(run_dir_, opts_.resume, opts_.overwrite);
      for (const auto& f : remove_stale_temp_files(*lock_))
        progress_.event("removed the temp file of an interrupted write: " + f);
      if (start == RunStart::resume) {
        choice = newest_good_checkpoint(ckpt_dir);
        for (const auto& why : choice.skipped) progress_.event(why);
        ZT_CHECK(choice.path, "--resume: no intact checkpoint in '", ckpt_dir, "' (",
                 choice.skipped.empty() ? std::string("none") : choice.skipped.front(), ")");
        const nlohmann::json meta = read_checkpoint_header(*choice.path).meta;
        decision = {1, meta.value("step", int64_t{-1}), meta.value("run_id", decision[2])};
      }
    }
    if (par_.layout.world_size > 1) {
      Tensor t = Tensor::from_vector(decision, {3}, device_);
      par_.world->broadcast(t, 0);
      decision = t.to_vector<int64_t>();
    }
    run_id_ = decision[2];
    if (decision[0] == 1) {
      restore(logger ? *choice.path : checkpoint_path(run_dir_, decision[1]));
      if (!logger) return;
      for (const auto& p : set_aside_damaged(choice.damaged))
        progress_.event("kept the damaged checkpoint as " + p + "; resumed from " + *choice.path + " instead");
      metrics_ = std::make_unique<MetricsWriter>(MetricsWriter::resume(metrics_path, step_));
      for (const auto& note : metrics_->notes()) progress_.event(note);
    } else if (logger) {
      if (start == RunStart::overwrite) {
        std::error_code ec;
        fs::remove(metrics_path, ec);
        prune_all_checkpoints();
      }
      metrics_ = std::make_unique<MetricsWriter>(MetricsWriter::fresh(metrics_path));
    }
    if (logger) write_file_atomic((fs::path(run_dir_) / "config.yaml").string(), config_to_yaml(cfg_));
  }

  void prune_all_checkpoints() {
    const fs::path dir = fs::path(run_dir_) / "checkpoints";
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("step_", 0) == 0 && name.find(".ckpt") != std::string::npos) fs::remove(e.path(), ec);
    }
  }

  void announce() {
    const auto& m = cfg_.model;
    std::ostringstream s;
    s << "model: " << model_->describe() << ", " << m.n_layer << " layers, " << m.n_head << " heads, d_model " << m.d_model << ", seq_len "
      << m.seq_len << ", vocab " << m.vocab_size << " (padded " << m.padded_vocab() << "); parameters "
      << format_parameter_count(model_->num_parameters());
    progress_.event(s.str());
    s.str("");
    s << "data: train " << train_loader_->num_tokens() << " tokens in " << train_loader_->shard_paths().size()
      << " shard(s) (" << train_loader_->batches_per_epoch() << " micro-batches per epoch), val "
      << val_loader_->num_tokens() << " tokens";
    progress_.event(s.str());
    s.str("");
    s << "device " << device_.str();
    if (device_.is_cpu()) s << " (" << omp_get_max_threads() << " threads)";
    s << ", dtype " << cfg_.train.dtype << ", " << tokens_per_step_ << " tokens per step (batch "
      << cfg_.train.batch_size << " x seq_len " << cfg_.model.seq_len << " x grad_accum " << cfg_.train.grad_accum
      << "), " << cfg_.train.max_steps << " steps; run dir " << run_dir_;
    if (fused_head_) s << "; fused head (loss.fused_head " << cfg_.loss.fused_head << ": the logits are never whole)";
    if (m.activation_checkpointing != "none")
      s << "; activation checkpointing " << m.activation_checkpointing << " (recomputed in backward)";
    progress_.event(s.str());
    progress_.event("memory per rank: " + rank_training_memory(cfg_, par_.layout, compute_, fused_head_).describe());
    if (par_.layout.world_size > 1) {
      s.str("");
      s << "parallel: " << par_.layout.describe() << "; " << step_runner_->micro_batch_rows()
        << " sequences per rank and micro-batch; backend " << par_.world->backend();
      progress_.event(s.str());
    }
    {
      // What this rank holds, measured from its buffers (the estimate above is from the config).
      s.str("");
      s << "optimizer state per rank: " << adam_->state_bytes() << " bytes (AdamW m, v"
        << (adam_->keeps_masters() ? ", f32 master weights" : "");
      if (adam_->layout().sharded())
        s << "; parallel.zero_stage " << cfg_.parallel.zero_stage << ": this rank's shard, 1/"
          << adam_->layout().shards();
      else if (cfg_.parallel.zero_stage > 0)
        s << "; parallel.zero_stage " << cfg_.parallel.zero_stage << " shards nothing with one data-parallel rank";
      s << "); weights " << adam_->weight_bytes() << " bytes ("
        << (adam_->keeps_masters() ? "bf16, whole; the f32 masters are the optimizer's shard" : "f32 masters") << ")";
      if (step_runner_->gradient_bytes() > 0) s << "; gradient buffers " << step_runner_->gradient_bytes() << " bytes";
      progress_.event(s.str());
    }
    if (step_ > 0) progress_.event("resumed at step " + std::to_string(step_) + " from " + resumed_from_);
  }

  // Mean cross-entropy on the first eval_batches validation batches (no z-loss, no
  // smoothing: comparable across z-loss ablations), the same batches every time. Each
  // data-parallel rank evaluates its rows; the sums are reduced over the group.
  double evaluate() {
    NoGradGuard no_grad;
    val_loader_->reset();
    const int64_t n = std::max<int64_t>(1, std::min(cfg_.log.eval_batches, val_loader_->batches_per_epoch()));
    double sums[2] = {0, 0};  // ce, count
    for (int64_t i = 0; i < n; ++i) {
      data::Batch b = val_loader_->next();
      ops::CrossEntropyResult r = model_->loss(b.inputs.to(device_), b.targets.to(device_), evaluation_loss_options(cfg_.loss, fused_head_),
                                               compute_, /*training=*/false, eval_dropout_);
      r.check();
      sums[0] += r.ce_sum.item();
      sums[1] += static_cast<double>(r.count.item());
    }
    if (par_.dp->size() > 1) {
      Tensor t = Tensor::from_vector(std::vector<double>(sums, sums + 2), {2}, device_);
      par_.dp->all_reduce(t, ReduceOp::sum);
      const auto v = t.to_vector<double>();
      sums[0] = v[0], sums[1] = v[1];
    }
    EvalMetrics e;
    e.step = step_;
    e.tokens = tokens_;
    e.val_loss = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
    e.elapsed_s = elapsed_before_ + seconds_since(start_);
    if (metrics_) metrics_->write(e.to_json());
    char buf[128];
    std::snprintf(buf, sizeof buf, "step %lld/%lld | val_loss %.4f (%lld batches)", static_cast<long long>(step_),
                  static_cast<long long>(cfg_.train.max_steps), e.val_loss, static_cast<long long>(n));
    progress_.event(buf);
    return e.val_loss;
  }

  // Data-parallel rank 0's tensor-parallel group writes (the other groups hold the same
  // values); every shard is on disk before the manifest that makes the checkpoint exist.
  void save_checkpoint(double elapsed) {
    const ParallelLayout& l = par_.layout;
    Checkpoint ck;
    const data::DataLoaderState pos = train_loader_->state();
    ck.meta = {{"step", step_},
               {"tokens", tokens_},
               {"elapsed_s", elapsed},
               {"data", {{"epoch", pos.epoch}, {"batch", pos.batch}}},
               {"adamw_steps", adam_->steps_taken()},
               {"layout", {{"tensor_parallel_size", l.tp_size}, {"data_parallel_size", l.dp_size}}},
               {"nonfinite", nonfinite_.state()},
               {"run_id", run_id_}};
    ck.config_yaml = config_to_yaml(cfg_);
    const std::string path = checkpoint_path(run_dir_, step_);
    // Whole per parameter, whatever the sharding (a collective over the data-parallel group
    // under ZeRO, kept by its rank 0, the writer), so any layout and zero_stage can resume from it.
    const AdamW::FullState state = adam_->full_state(par_.dp.get(), 0);
    if (l.dp_rank == 0) {
      if (l.rank == 0) fs::create_directories(fs::path(path).parent_path());
      par_.tp->barrier();  // the folder exists before the other shards are written
      Checkpoint shard = ck;
      if (state.weights.empty()) save_model(*model_, shard);
      // Else the f32 masters AdamW keeps (the model's leaves are only their bf16 rounding).
      for (const auto& [name, t] : state.weights) shard.tensors["model/" + name] = t;
      for (const auto& [name, t] : state.m) shard.tensors["adamw/m/" + name] = t;
      for (const auto& [name, t] : state.v) shard.tensors["adamw/v/" + name] = t;
      write_checkpoint_shard(path, shard, l.tp_rank, l.tp_size);
      if (l.tp_size > 1) {
        par_.tp->barrier();
        std::vector<std::string> keys;
        for (const auto& [key, t] : shard.tensors) keys.push_back(key);
        if (l.rank == 0)
          write_checkpoint_manifest(path, ck, l.tp_size, keys, checkpoint_splits(*model_));
      }
    }
    if (l.rank == 0) prune_sharded_checkpoints(run_dir_, cfg_.log.keep_checkpoints);
    par_.world->barrier();  // nobody runs ahead of a checkpoint that is not yet complete
    progress_.event("step " + std::to_string(step_) + "/" + std::to_string(cfg_.train.max_steps) +
                    " | checkpoint " + path);
  }

  void restore(const std::string& path) {
    const ParallelLayout& l = par_.layout;
    // Same model shape, or no resume; the parallel layout may differ (re-sharded below).
    const auto incompatible = resume_incompatibilities(read_checkpoint_header(path).config_yaml, cfg_);
    if (!incompatible.empty()) {
      std::string list;
      for (const auto& d : incompatible) list += (list.empty() ? "" : "; ") + d;
      ZT_FAIL("--resume: the config differs from the checkpoint '", path, "' in keys a resume cannot change (", list,
              "); use the checkpoint's values, or start a new run in another log.out_dir");
    }
    int saved_tp = 1;
    const Checkpoint ck =
        read_checkpoint_for_rank(path, l.tp_rank, l.tp_size, checkpoint_splits(*model_), &saved_tp);
    nonfinite_.restore(ck.meta.value("nonfinite", nlohmann::json()));
    load_model(*model_, ck, path);
    std::map<std::string, Tensor> m, v;
    for (const auto& p : model_->parameters().all()) {
      for (auto [prefix, map] : {std::pair{"adamw/m/", &m}, std::pair{"adamw/v/", &v}}) {
        auto it = ck.tensors.find(prefix + p.name);
        ZT_CHECK(it != ck.tensors.end(), "checkpoint '", path, "' has no optimizer state '", prefix, p.name, "'");
        (*map)[p.name] = it->second;
      }
    }
    if (adam_->keeps_masters()) {  // the f32 masters of its shard (the model's leaves are bf16)
      std::map<std::string, Tensor> weights;
      for (const auto& p : model_->parameters().all()) weights[p.name] = ck.tensors.at("model/" + p.name);
      adam_->load_masters(weights);
    }
    try {
      adam_->load_state(ck.meta.at("adamw_steps").get<int64_t>(), m, v);
      step_ = ck.meta.at("step").get<int64_t>();
      tokens_ = ck.meta.at("tokens").get<int64_t>();
      elapsed_before_ = ck.meta.at("elapsed_s").get<double>();
      train_loader_->restore({ck.meta.at("data").at("epoch").get<int64_t>(), ck.meta.at("data").at("batch").get<int64_t>()});
    } catch (const nlohmann::json::exception& e) {
      ZT_FAIL("checkpoint '", path, "' lacks training state (", e.what(), ")");
    }
    ZT_CHECK(step_ <= cfg_.train.max_steps, "--resume: the checkpoint is at step ", step_, ", beyond train.max_steps = ",
             cfg_.train.max_steps);
    resumed_from_ = path;
    if (saved_tp != l.tp_size)
      progress_.event("note: the checkpoint was saved with tensor_parallel_size " + std::to_string(saved_tp) +
                      "; its tensors were re-sharded for " + std::to_string(l.tp_size));
    const auto changed = lines_not_in(config_to_yaml(cfg_), ck.config_yaml);
    if (!changed.empty()) {
      std::string list;
      for (const auto& line : changed) list += (list.empty() ? "" : ";") + line;
      progress_.event("note: the config differs from the checkpoint's (now:" + list +
                      "); the resumed run will not match an uninterrupted one exactly");
    }
  }

  Config cfg_;
  TrainOptions opts_;
  std::string run_dir_;
  ParallelContext par_;
  std::FILE* out_;
  Progress progress_;
  Device device_;
  DType compute_ = DType::f32;
  bool fused_head_ = false;  // loss.fused_head as resolved for this run
  int64_t tokens_per_step_ = 0;
  std::unique_ptr<data::DataLoader> train_loader_, val_loader_;
  std::unique_ptr<Model> model_;
  Generator eval_dropout_;  // evaluation runs without dropout; forward still takes a generator
  std::unique_ptr<AdamW> adam_;
  std::unique_ptr<TrainingStep> step_runner_;
  LrSchedule lr_;
  ZLossSchedule z_;
  std::unique_ptr<MetricsWriter> metrics_;
  int64_t step_ = 0, tokens_ = 0;
  double elapsed_before_ = 0;  // training time of the run before this invocation (resume)
  Clock::time_point start_;
  std::string resumed_from_;
  NonFinitePolicy nonfinite_;
  int64_t run_id_ = 0;  // the same on every rank; kept across resumes
  std::optional<RunDirLock> lock_;  // rank 0: held from prepare_run_dir() to the end of the run
};

}  // namespace

TrainSummary train(const Config& config, const TrainOptions& options) {
  Trainer t(config, options);
  return t.run();
}

}  // namespace zt
