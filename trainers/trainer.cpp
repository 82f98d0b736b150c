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
#include "models/gpt.h"
#include "ops/cross_entropy.h"
#include "trainers/adamw.h"
#include "trainers/checkpoint.h"
#include "trainers/data/data_loader.h"
#include "trainers/grad_clip.h"
#include "trainers/lr_schedule.h"
#include "trainers/memory_estimate.h"
#include "trainers/metrics.h"
#include "trainers/model_state.h"
#include "trainers/nonfinite_policy.h"
#include "trainers/progress.h"
#include "trainers/resume_check.h"
#include "trainers/run_dir.h"
#include "trainers/z_loss_schedule.h"

namespace zt {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The cross-entropy op's logging outputs, summed over the micro-batches of one step.
struct LossStats {
  double ce_sum = 0, z_sum = 0, lse_sum = 0;
  double lse_max = -std::numeric_limits<double>::infinity();
  int64_t count = 0;

  void add(const ops::CrossEntropyResult& r, const Tensor& host_targets, int64_t ignore_index) {
    ce_sum += r.ce_sum.item();
    z_sum += r.z_sum.item();
    count += static_cast<int64_t>(r.count.item());
    const std::vector<double> lse = r.lse.to_vector<double>();
    const std::vector<int64_t> t = host_targets.to_vector<int64_t>();
    for (size_t i = 0; i < lse.size(); ++i) {
      if (t[i] == ignore_index) continue;  // lse is 0 there, not a statistic
      lse_sum += lse[i];
      lse_max = std::max(lse_max, lse[i]);
      if (std::isnan(lse[i])) lse_max = lse[i];
    }
  }
  double mean(double sum) const { return count > 0 ? sum / static_cast<double>(count) : 0.0; }
};

nlohmann::json rng_to_json(const Generator::State& s) {
  uint64_t spare_bits;
  std::memcpy(&spare_bits, &s.spare, 8);
  return {{"s", {s.s[0], s.s[1], s.s[2], s.s[3]}}, {"spare_bits", spare_bits}, {"has_spare", s.has_spare}};
}

Generator::State rng_from_json(const nlohmann::json& j) {
  Generator::State s{};
  for (int i = 0; i < 4; ++i) s.s[i] = j.at("s").at(i).get<uint64_t>();
  const uint64_t bits = j.at("spare_bits").get<uint64_t>();
  std::memcpy(&s.spare, &bits, 8);
  s.has_spare = j.at("has_spare").get<bool>();
  return s;
}

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
        progress_(opts.out, opts.terminal < 0 ? Progress::is_terminal(opts.out) : opts.terminal == 1,
                  cfg.train.max_steps, cfg.log.log_every),
        nonfinite_(cfg.train.on_nonfinite, cfg.train.max_skipped_consecutive, cfg.train.max_skipped_total) {
    if (cfg_.train.threads > 0) omp_set_num_threads(static_cast<int>(cfg_.train.threads));
    device_ = resolve_device(cfg_.train.device);
    compute_ = parse_dtype(cfg_.train.dtype);
    tokens_per_step_ = cfg_.train.batch_size * cfg_.train.grad_accum * cfg_.model.seq_len;
    // [run-dir] A config that cannot fit is refused before anything is allocated.
    check_memory_fits(estimate_training_memory(cfg_.model, cfg_.train.batch_size, compute_), device_,
                      "training this config");

    // Data first: a missing or bad shard should fail before anything is written.
    data::DataLoaderOptions d;
    d.batch_size = cfg_.train.batch_size;
    d.seq_len = cfg_.model.seq_len;
    d.seed = static_cast<uint64_t>(cfg_.train.seed);
    d.vocab_size = cfg_.model.vocab_size;
    d.shards = cfg_.data.train;
    d.shuffle = true;
    train_loader_ = std::make_unique<data::DataLoader>(d);
    d.shards = cfg_.data.val;
    d.shuffle = false;
    val_loader_ = std::make_unique<data::DataLoader>(d);

    Generator init(static_cast<uint64_t>(cfg_.train.seed));
    model_ = std::make_unique<Gpt>(cfg_.model, init, device_);
    // Dropout draws from its own stream, so turning dropout on never changes the init.
    dropout_gen_.reseed(static_cast<uint64_t>(cfg_.train.seed) ^ 0x64726f706f7574ull);
    adam_ = std::make_unique<AdamW>(model_->parameters().all(),
                                    AdamWOptions{cfg_.optim.weight_decay, cfg_.optim.beta1, cfg_.optim.beta2,
                                                 cfg_.optim.eps});
    lr_ = LrSchedule{cfg_.optim.lr, cfg_.optim.min_lr, cfg_.schedule.warmup_steps, cfg_.train.max_steps};
    z_ = ZLossSchedule{cfg_.loss.z_loss_schedule, cfg_.loss.z_loss_weight, cfg_.loss.z_loss_start,
                       cfg_.loss.z_loss_warmup_steps};
  }

  TrainSummary run() {
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
      StepMetrics m = train_step();
      const double dt = seconds_since(t0);
      avg_step_s = done == 0 ? dt : 0.9 * avg_step_s + 0.1 * dt;
      ++done;
      m.tokens_per_s = static_cast<double>(tokens_per_step_) / dt;
      m.elapsed_s = elapsed_before_ + seconds_since(start);
      if (device_.is_cuda())
        m.mfu = model_->flops_per_token() * m.tokens_per_s / (cfg_.log.peak_tflops * 1e12);
      metrics_->write(m.to_json());
      summary.last_loss = m.loss;
      // [run-dir] Non-finite steps: skip (within the limits) or stop, never checkpointing the broken model.
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
      if (last || (cfg_.log.checkpoint_every > 0 && step_ % cfg_.log.checkpoint_every == 0 &&
                   nonfinite_.may_checkpoint()))  // [run-dir]
        save_checkpoint(elapsed_before_ + seconds_since(start));
    }
    progress_.finish();
    summary.last_step = step_;
    summary.seconds = seconds_since(start);
    return summary;
  }

 private:
  void prepare_run_dir() {
    // [run-dir] Lock the directory for the life of the run, decide fresh/overwrite/resume from what it
    // holds, drop temp files of interrupted writes, resume from the newest intact checkpoint.
    lock_.emplace(run_dir_);
    const RunStart start = plan_run_start(run_dir_, opts_.resume, opts_.overwrite);
    for (const auto& f : remove_stale_temp_files(*lock_))
      progress_.event("removed the temp file of an interrupted write: " + f);
    const std::string metrics_path = (fs::path(run_dir_) / "metrics.jsonl").string();
    if (start == RunStart::resume) {
      const CheckpointChoice choice = newest_good_checkpoint((fs::path(run_dir_) / "checkpoints").string());
      for (const auto& why : choice.skipped) progress_.event(why);
      ZT_CHECK(choice.path, "--resume: no intact checkpoint in '", (fs::path(run_dir_) / "checkpoints").string(),
               "' (", choice.skipped.empty() ? std::string("none") : choice.skipped.front(), ")");
      restore(*choice.path);
      for (const auto& p : set_aside_damaged(choice.damaged))
        progress_.event("kept the damaged checkpoint as " + p + "; resumed from " + *choice.path + " instead");
      metrics_ = std::make_unique<MetricsWriter>(MetricsWriter::resume(metrics_path, step_));
      for (const auto& note : metrics_->notes()) progress_.event(note);
    } else {
      if (start == RunStart::overwrite) {
        std::error_code ec;
        fs::remove(metrics_path, ec);
        prune_all_checkpoints();
      }
      metrics_ = std::make_unique<MetricsWriter>(MetricsWriter::fresh(metrics_path));
    }
    write_file_atomic((fs::path(run_dir_) / "config.yaml").string(), config_to_yaml(cfg_));
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
    s << "model: GPT, " << m.n_layer << " layers, " << m.n_head << " heads, d_model " << m.d_model << ", seq_len "
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
    progress_.event(s.str());
    if (step_ > 0) progress_.event("resumed at step " + std::to_string(step_) + " from " + resumed_from_);
  }

  StepMetrics train_step() {
    const int64_t accum = cfg_.train.grad_accum;
    StepMetrics m;
    m.lr = lr_.at(step_);
    m.z_loss_weight = z_.at(step_);
    model_->parameters().zero_grad();
    LossStats stats;
    for (int64_t a = 0; a < accum; ++a) {
      data::Batch b = train_loader_->next();
      const Tensor ids = b.inputs.to(device_);
      const Tensor targets = b.targets.to(device_).reshape({-1});
      Variable logits = model_->forward(ids, compute_, /*training=*/true, dropout_gen_);
      ops::CrossEntropyOptions xo;
      xo.label_smoothing = cfg_.loss.label_smoothing;
      xo.z_loss_weight = m.z_loss_weight;
      xo.ignore_index = cfg_.loss.ignore_index;
      xo.num_classes = cfg_.model.vocab_size;  // the logits' columns past it are the table's padding
      ops::CrossEntropyResult r = ops::cross_entropy(logits, targets, xo);
      r.check();
      stats.add(r, b.targets, cfg_.loss.ignore_index);
      r.loss.backward(1.0 / static_cast<double>(accum));
    }
    ++step_;
    tokens_ += tokens_per_step_;
    m.step = step_;
    m.tokens = tokens_;
    m.ce_loss = stats.mean(stats.ce_sum);
    m.z_loss = stats.mean(stats.z_sum);
    m.loss = m.ce_loss + m.z_loss;
    m.lse_mean = stats.mean(stats.lse_sum);
    m.lse_max = stats.count > 0 ? stats.lse_max : 0.0;
    m.grad_norm = global_grad_norm(model_->parameters().all());
    if (!std::isfinite(m.loss) || !std::isfinite(m.grad_norm)) {
      m.skipped = cfg_.train.on_nonfinite == "skip";
      model_->parameters().zero_grad();
      return m;  // no update; the caller stops or reports the skip
    }
    clip_grad_norm(model_->parameters().all(), cfg_.optim.grad_clip, m.grad_norm);
    adam_->step(m.lr);
    model_->parameters().zero_grad();  // gradients are dead weight between steps
    return m;
  }

  // Mean cross-entropy on the first eval_batches validation batches (no z-loss, no
  // smoothing: comparable across z-loss ablations), the same batches every time.
  double evaluate() {
    NoGradGuard no_grad;
    val_loader_->reset();
    const int64_t n = std::max<int64_t>(1, std::min(cfg_.log.eval_batches, val_loader_->batches_per_epoch()));
    double ce = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) {
      data::Batch b = val_loader_->next();
      Variable logits = model_->forward(b.inputs.to(device_), compute_, /*training=*/false, dropout_gen_);
      ops::CrossEntropyOptions xo;
      xo.ignore_index = cfg_.loss.ignore_index;
      xo.inplace_grad = false;
      xo.num_classes = cfg_.model.vocab_size;
      ops::CrossEntropyResult r = ops::cross_entropy(logits, b.targets.to(device_).reshape({-1}), xo);
      r.check();
      ce += r.ce_sum.item();
      count += static_cast<int64_t>(r.count.item());
    }
    EvalMetrics e;
    e.step = step_;
    e.tokens = tokens_;
    e.val_loss = count > 0 ? ce / static_cast<double>(count) : 0.0;
    e.elapsed_s = elapsed_before_ + seconds_since(start_);
    metrics_->write(e.to_json());
    char buf[128];
    std::snprintf(buf, sizeof buf, "step %lld/%lld | val_loss %.4f (%lld batches)", static_cast<long long>(step_),
                  static_cast<long long>(cfg_.train.max_steps), e.val_loss, static_cast<long long>(n));
    progress_.event(buf);
    return e.val_loss;
  }

  void save_checkpoint(double elapsed) {
    Checkpoint ck;
    const data::DataLoaderState pos = train_loader_->state();
    ck.meta = {{"step", step_},
               {"tokens", tokens_},
               {"elapsed_s", elapsed},
               {"data", {{"epoch", pos.epoch}, {"batch", pos.batch}}},
               {"dropout_rng", rng_to_json(dropout_gen_.state())},
               {"adamw_steps", adam_->steps_taken()},
               {"nonfinite", nonfinite_.state()}};  // [run-dir]
    ck.config_yaml = config_to_yaml(cfg_);
    save_model(*model_, ck);
    for (const auto& [name, t] : adam_->first_moments()) ck.tensors["adamw/m/" + name] = t;
    for (const auto& [name, t] : adam_->second_moments()) ck.tensors["adamw/v/" + name] = t;
    const std::string path = checkpoint_path(run_dir_, step_);
    write_checkpoint(path, ck);
    prune_checkpoints(run_dir_, cfg_.log.keep_checkpoints);
    progress_.event("step " + std::to_string(step_) + "/" + std::to_string(cfg_.train.max_steps) +
                    " | checkpoint " + path);
  }

  void restore(const std::string& path) {
    const Checkpoint ck = read_checkpoint(path);
    // [run-dir] Same model shape and parallel layout, or no resume.
    const auto incompatible = resume_incompatibilities(ck.config_yaml, cfg_);
    if (!incompatible.empty()) {
      std::string list;
      for (const auto& d : incompatible) list += (list.empty() ? "" : "; ") + d;
      ZT_FAIL("--resume: the config differs from the checkpoint '", path, "' in keys a resume cannot change (", list,
              "); use the checkpoint's values, or start a new run in another log.out_dir");
    }
    nonfinite_.restore(ck.meta.value("nonfinite", nlohmann::json()));  // [run-dir]
    load_model(*model_, ck, path);
    std::map<std::string, Tensor> m, v;
    for (const auto& p : model_->parameters().all()) {
      for (auto [prefix, map] : {std::pair{"adamw/m/", &m}, std::pair{"adamw/v/", &v}}) {
        auto it = ck.tensors.find(prefix + p.name);
        ZT_CHECK(it != ck.tensors.end(), "checkpoint '", path, "' has no optimizer state '", prefix, p.name, "'");
        (*map)[p.name] = it->second;
      }
    }
    try {
      adam_->load_state(ck.meta.at("adamw_steps").get<int64_t>(), m, v);
      step_ = ck.meta.at("step").get<int64_t>();
      tokens_ = ck.meta.at("tokens").get<int64_t>();
      elapsed_before_ = ck.meta.at("elapsed_s").get<double>();
      train_loader_->restore({ck.meta.at("data").at("epoch").get<int64_t>(), ck.meta.at("data").at("batch").get<int64_t>()});
      dropout_gen_.set_state(rng_from_json(ck.meta.at("dropout_rng")));
    } catch (const nlohmann::json::exception& e) {
      ZT_FAIL("checkpoint '", path, "' lacks training state (", e.what(), ")");
    }
    ZT_CHECK(step_ <= cfg_.train.max_steps, "--resume: the checkpoint is at step ", step_, ", beyond train.max_steps = ",
             cfg_.train.max_steps);
    resumed_from_ = path;
    const auto changed = lines_not_in(config_to_yaml(cfg_), ck.config_yaml);
    if (!changed.empty()) {
      std::string list;
      for (const auto& l : changed) list += (list.empty() ? "" : ";") + l;
      progress_.event("note: the config differs from the checkpoint's (now:" + list +
                      "); the resumed run will not match an uninterrupted one exactly");
    }
  }

  Config cfg_;
  TrainOptions opts_;
  std::string run_dir_;
  Progress progress_;
  Device device_;
  DType compute_ = DType::f32;
  int64_t tokens_per_step_ = 0;
  std::unique_ptr<data::DataLoader> train_loader_, val_loader_;
  std::unique_ptr<Gpt> model_;
  Generator dropout_gen_;
  std::unique_ptr<AdamW> adam_;
  LrSchedule lr_;
  ZLossSchedule z_;
  std::unique_ptr<MetricsWriter> metrics_;
  int64_t step_ = 0, tokens_ = 0;
  double elapsed_before_ = 0;  // training time of the run before this invocation (resume)
  Clock::time_point start_;
  std::string resumed_from_;
  NonFinitePolicy nonfinite_;         // [run-dir]
  std::optional<RunDirLock> lock_;    // [run-dir] held from prepare_run_dir() to the end of the run
};

}  // namespace

TrainSummary train(const Config& config, const TrainOptions& options) {
  Trainer t(config, options);
  return t.run();
}

}  // namespace zt
