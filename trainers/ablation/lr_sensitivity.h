#pragma once
// Divergence of a run and the learning-rate sensitivity of a sweep over optim.lr
// (Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
// instabilities", section 3.2).
//
// Per run:
//   final loss   the last val_loss record, or the last training loss when it has none
//   init loss    the loss at initialisation: its step-0 val_loss record, or ln(vocab_size)
//   diverged     a finished run (train exited) that
//                  (a) stopped on a non-finite loss or gradient norm (train.on_nonfinite:
//                      stop, or skip past its limits; ablate marks it ablate.diverged), or
//                  (b) ended with a non-finite final loss, or
//                  (c) ended with final loss > init loss.
//                A run that failed for any other reason (exit status, signal) is crashed
//                ("failed"), not diverged, and says nothing about its learning rate.
//
// Per setting of the other swept keys, the seeds of each learning rate are averaged:
//   L(lr)        mean over its finished (done or diverged) seeds of min(final, init), a
//                diverged run counting as its init loss
//   best lr      argmin L;  best loss = min L
//   sensitivity  mean over the swept learning rates of min(L(lr), init) - best loss, init the
//                mean init loss of the setting's finished runs; NaN unless every learning
//                rate has a finished run.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainers/ablation/summary.h"
#include "trainers/ablation/sweep.h"

namespace zt::ablation {

inline constexpr const char* kLrKey = "optim.lr";

// Why a finished run diverged ("" when it did not): stopped_nonfinite is (a) above.
std::string divergence_reason(bool stopped_nonfinite, double final_loss, double init_loss);

// The final loss of the definition above.
double final_loss_of(const RunSummary& summary);

struct LrPoint {
  std::string lr;             // as swept ("1e-3")
  double lr_value = 0;        // as a number
  double loss = 0;            // L(lr); NaN without a finished run
  int64_t finished = 0;       // seeds done or diverged
  int64_t diverged = 0;
};

struct LrSetting {
  std::vector<std::pair<std::string, std::string>> values;  // the other swept keys, in sweep order
  std::string label;                                        // "z_loss_weight=0" ("all" without others)
  std::vector<LrPoint> points;                              // ascending learning rate
  double init_loss = 0;                                     // mean over the finished runs; NaN without
  std::string best_lr;                                      // "" without a finished run
  double best_loss = 0, sensitivity = 0;                    // NaN when undefined (above)
  int64_t runs = 0, finished = 0, diverged = 0, crashed = 0;
};

// The table, when the grid sweeps optim.lr over at least two values; std::nullopt otherwise.
// rows[i].status "done" / "diverged" count as finished, "failed" as crashed.
std::optional<std::vector<LrSetting>> lr_sensitivity(const std::vector<Sweep>& sweeps,
                                                     const std::vector<SummaryRow>& rows);

// The "## Learning-rate sensitivity" section of summary.md.
std::string lr_sensitivity_markdown(const std::vector<Sweep>& sweeps, const std::vector<LrSetting>& settings);

// lr_sensitivity.json for tools/plot_ablation.py: the settings and points above, and per run
// its name, label, setting label, learning rate, status, final and init loss and why it
// diverged.
nlohmann::json lr_sensitivity_json(const std::vector<Sweep>& sweeps, const std::vector<LrSetting>& settings,
                                   const std::vector<SummaryRow>& rows);

}  // namespace zt::ablation
