#pragma once
// Per-run numbers of an ablation and the summary tables (summary.md, summary.csv).
//
// Columns, per run (NaN, shown as "-" / empty, when the run logged nothing to compute it from):
//   steps           last logged step
//   final_loss      training loss of the last logged step
//   final_val_loss  val_loss of the last evaluation;  best_val_loss: the lowest one
//   mean_lse_last10 mean of lse_mean over the last 10% of the logged steps (at least one)
//   max_abs_lse     max over logged steps of max(|lse_max|, |lse_mean|): the largest |lse| seen
//                   (a lower bound of the true max |lse| over rows, which needs the row minimum)
//   loss_spikes     spikes of the training loss (see spikes.h)
//   tokens_per_s    mean of tokens_per_s over the logged steps after the first (the first step
//                   carries one-time warm-up: allocation, autotuning)
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "trainers/ablation/grid.h"
#include "trainers/ablation/run_metrics.h"
#include "trainers/ablation/spikes.h"

namespace zt::ablation {

struct RunSummary {
  int64_t steps = -1;  // -1: no step logged
  double final_loss, final_val_loss, best_val_loss, mean_lse_last10, max_abs_lse, tokens_per_s;
  int64_t loss_spikes = 0;
  bool has_val_loss = false;  // some evaluation was logged (its value may be NaN)
  double initial_val_loss;    // val_loss of the step-0 evaluation; NaN without one
  bool ends_nonfinite = false;  // the last step record has a non-finite loss or grad_norm
};

RunSummary summarize(const RunMetrics& metrics, const SpikeOptions& spikes = {});

// One row of the tables.
struct SummaryRow {
  RunSpec run;
  std::string status;  // "done", "diverged", "failed", "unfinished", "not run"
  RunSummary summary;
  double init_loss = std::numeric_limits<double>::quiet_NaN();  // see lr_sensitivity.h
  std::string diverged;  // why it diverged (lr_sensitivity.h); "" when it did not
};

// Markdown: a table with one row per run (swept values by short key, seed, status, numbers),
// then, when some setting has more than one seed, a second table with each setting's mean
// over its finished seeds, then, when the grid sweeps optim.lr, the learning-rate sensitivity
// section (lr_sensitivity.h). `sweeps` gives the column order.
std::string summary_markdown(const std::vector<Sweep>& sweeps, const std::vector<SummaryRow>& rows,
                             const SpikeOptions& spikes);
// CSV (RFC 4180 quoting): run, one column per swept key (full key), seed, status, then the
// numbers above in full precision; NaN is an empty field.
std::string summary_csv(const std::vector<Sweep>& sweeps, const std::vector<SummaryRow>& rows);

}  // namespace zt::ablation
