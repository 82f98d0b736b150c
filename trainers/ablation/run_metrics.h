#pragma once
// Reads a run's metrics.jsonl (written by the trainer) into step and evaluation series.
//
// Each line is one JSON object. A line with "loss" is a step record; a line with "val_loss"
// is an evaluation record (one line may be both). Missing fields and JSON null (how a NaN is
// written) read as NaN. A resumed run may log steps again that it had logged before its last
// checkpoint: when a step number repeats or goes back, the records from that step on are
// replaced, so the series is the trajectory the final model actually took. A last line cut
// short (the trainer killed mid-write) is ignored; any other malformed line is an error.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace zt::ablation {

struct StepRecord {
  int64_t step = 0;
  double tokens = 0, lr = 0, loss = 0, ce_loss = 0, z_loss = 0, lse_mean = 0, lse_max = 0, grad_norm = 0,
         z_loss_weight = 0, tokens_per_s = 0;
};

struct EvalRecord {
  int64_t step = 0;
  double val_loss = 0;
};

struct RunMetrics {
  std::vector<StepRecord> steps;  // ascending step
  std::vector<EvalRecord> evals;  // ascending step
};

// Throws zt::Error "FILE:LINE: ..." on a malformed line or a record without "step".
RunMetrics parse_metrics(const std::string& jsonl_text, const std::string& source);
// A missing file is an error; read_metrics_if_present returns empty series instead.
RunMetrics read_metrics(const std::filesystem::path& file);
RunMetrics read_metrics_if_present(const std::filesystem::path& file);

}  // namespace zt::ablation
