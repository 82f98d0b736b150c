#pragma once
// metrics.jsonl: one JSON object per line, appended and flushed as the run goes.
//
//   step record:  {"step", "tokens", "lr", "loss", "ce_loss", "z_loss", "lse_mean", "lse_max",
//                  "grad_norm", "z_loss_weight", "tokens_per_s", "elapsed_s", ["mfu" on GPU],
//                  ["skipped": true when on_nonfinite=skip dropped the update],
//                  [at log steps: the instability signals of trainers/signals.h: logits_absmax,
//                   logits_mean, logits_std, attn_score_max, attn_score_max/layer_<i>,
//                   grad_norm/<group>, update_ratio/<group>]}
//   eval record:  {"step", "tokens", "val_loss", "elapsed_s"}
// NaN and inf are written as null (JSON has no such numbers).
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace zt {

struct StepMetrics {
  int64_t step = 0;    // 1-based: the step just completed
  int64_t tokens = 0;  // tokens trained on so far, this step included
  double lr = 0, loss = 0, ce_loss = 0, z_loss = 0, lse_mean = 0, lse_max = 0, grad_norm = 0, z_loss_weight = 0;
  double tokens_per_s = 0, elapsed_s = 0;
  std::optional<double> mfu;  // GPU runs only
  // The instability signals of a log step (trainers/signals.h), name -> value; empty otherwise.
  std::vector<std::pair<std::string, double>> signals;
  bool skipped = false;

  nlohmann::json to_json() const;
};

struct EvalMetrics {
  int64_t step = 0;
  int64_t tokens = 0;
  double val_loss = 0;
  double elapsed_s = 0;

  nlohmann::json to_json() const;
};

// Fields that differ between two runs of the same computation (timing); everything else in a
// record is a pure function of the config and the data.
bool is_timing_field(const std::string& key);

class MetricsWriter {
 public:
  // fresh: starts an empty file. Resuming at step s: keeps the records with step <= s
  // (what the run had written up to its checkpoint) and appends after them; lines that are
  // not records move to <path>.damaged, with a note (notes()) naming their line numbers.
  static MetricsWriter fresh(const std::string& path);
  static MetricsWriter resume(const std::string& path, int64_t step);
  MetricsWriter(MetricsWriter&&) noexcept;
  ~MetricsWriter();

  void write(const nlohmann::json& record);  // one line, flushed
  // What resume() had to tell the user (damaged lines set aside); print each.
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  explicit MetricsWriter(std::string path, const char* mode);
  std::string path_;
  std::FILE* f_ = nullptr;
  std::vector<std::string> notes_;
};

}  // namespace zt
