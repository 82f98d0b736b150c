#include "trainers/ablation/lr_sensitivity.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <sstream>

#include "trainers/ablation/grid.h"

namespace zt::ablation {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string fixed4(double value) {
  if (std::isnan(value)) return "-";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.4f", value);
  return buffer;
}

double as_double(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  return end == text.c_str() ? kNaN : v;
}

// The run's learning rate, and the label of its setting of the other swept keys ("all" when
// there are none).
struct RunKey {
  std::string lr, label;
  std::vector<std::pair<std::string, std::string>> others;
};

RunKey key_of(const std::vector<Sweep>& sweeps, const RunSpec& run) {
  RunKey key;
  for (size_t s = 0; s < run.values.size() && s < sweeps.size(); ++s) {
    if (sweeps[s].key == kLrKey) {
      key.lr = run.values[s].second;
      continue;
    }
    key.others.push_back(run.values[s]);
    if (!key.label.empty()) key.label += ' ';
    key.label += short_key(sweeps, s);
    key.label += '=';
    key.label += run.values[s].second;
  }
  if (key.label.empty()) key.label = "all";
  return key;
}

bool finished(const SummaryRow& row) { return row.status == "done" || row.status == "diverged"; }

// min(final, init), a diverged run counting as its init loss.
double capped_loss(const SummaryRow& row) {
  if (!row.diverged.empty()) return row.init_loss;
  return std::min(final_loss_of(row.summary), row.init_loss);
}

double mean(const std::vector<double>& values) {
  if (values.empty()) return kNaN;
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

}  // namespace

std::string divergence_reason(bool stopped_nonfinite, double final_loss, double init_loss) {
  if (stopped_nonfinite) return "stopped on a non-finite loss or gradient norm";
  if (!std::isfinite(final_loss)) return "non-finite final loss";
  if (final_loss > init_loss) return "final loss above the loss at initialisation";
  return "";
}

double final_loss_of(const RunSummary& s) { return s.has_val_loss ? s.final_val_loss : s.final_loss; }

std::optional<std::vector<LrSetting>> lr_sensitivity(const std::vector<Sweep>& sweeps,
                                                     const std::vector<SummaryRow>& rows) {
  size_t lr_index = sweeps.size();
  for (size_t i = 0; i < sweeps.size(); ++i) {
    if (sweeps[i].key == kLrKey) lr_index = i;
  }
  if (lr_index == sweeps.size() || sweeps[lr_index].values.size() < 2) return std::nullopt;

  // Learning rates ascending; settings in grid order.
  std::vector<std::string> lrs = sweeps[lr_index].values;
  std::stable_sort(lrs.begin(), lrs.end(),
                   [](const std::string& a, const std::string& b) { return as_double(a) < as_double(b); });
  std::vector<LrSetting> settings;
  std::map<std::string, size_t> index_of;  // label -> settings index
  // capped losses and init losses per (setting, lr)
  std::vector<std::map<std::string, std::vector<double>>> losses;
  std::vector<std::vector<double>> inits;
  for (const SummaryRow& row : rows) {
    const RunKey key = key_of(sweeps, row.run);
    const std::string& lr = key.lr;
    auto [it, inserted] = index_of.emplace(key.label, settings.size());
    if (inserted) {
      LrSetting setting;
      setting.values = key.others;
      setting.label = key.label;
      for (const std::string& v : lrs) setting.points.push_back({v, as_double(v), kNaN, 0, 0});
      settings.push_back(setting);
      losses.emplace_back();
      inits.emplace_back();
    }
    const size_t k = it->second;
    LrSetting& setting = settings[k];
    ++setting.runs;
    if (row.status == "failed") ++setting.crashed;
    if (!finished(row)) continue;
    ++setting.finished;
    const bool diverged = !row.diverged.empty();
    setting.diverged += diverged;
    for (LrPoint& p : setting.points) {
      if (p.lr != lr) continue;
      ++p.finished;
      p.diverged += diverged;
    }
    losses[k][lr].push_back(capped_loss(row));
    inits[k].push_back(row.init_loss);
  }

  for (size_t k = 0; k < settings.size(); ++k) {
    LrSetting& setting = settings[k];
    setting.init_loss = mean(inits[k]);
    setting.best_loss = setting.sensitivity = kNaN;
    bool all_present = true;
    for (LrPoint& p : setting.points) {
      p.loss = mean(losses[k][p.lr]);
      if (std::isnan(p.loss)) {
        all_present = false;
        continue;
      }
      if (std::isnan(setting.best_loss) || p.loss < setting.best_loss) {
        setting.best_loss = p.loss;
        setting.best_lr = p.lr;
      }
    }
    if (all_present) {
      double sum = 0;
      for (const LrPoint& p : setting.points) sum += std::min(p.loss, setting.init_loss) - setting.best_loss;
      setting.sensitivity = sum / static_cast<double>(setting.points.size());
    }
  }
  return settings;
}

std::string lr_sensitivity_markdown(const std::vector<Sweep>& sweeps, const std::vector<LrSetting>& settings) {
  std::ostringstream md;
  md << "\n## Learning-rate sensitivity\n\n"
        "Final loss (the last val_loss, else the last training loss) at each learning rate, the mean over the "
        "seeds that finished; a diverged run counts as its loss at initialisation (the step-0 val_loss, else "
        "ln(vocab_size)). Diverged: stopped on a non-finite loss or gradient norm, or a non-finite final loss, or "
        "a final loss above the loss at initialisation; crashed runs (failed for another reason) are left out. "
        "LR sensitivity (Wortsman et al. 2023): the mean over the learning rates of min(loss, loss at "
        "initialisation) minus the best loss; `-` unless every learning rate has a finished run.\n\n|";
  size_t lr_index = 0;
  for (size_t i = 0; i < sweeps.size(); ++i) {
    if (sweeps[i].key == kLrKey) {
      lr_index = i;
      continue;
    }
    md << " " << short_key(sweeps, i) << " |";
  }
  if (sweeps.size() == 1) md << " setting |";
  const std::vector<LrPoint>& header = settings.front().points;
  for (const LrPoint& p : header) md << " " << short_key(sweeps, lr_index) << "=" << p.lr << " |";
  md << " best lr | loss at init | diverged | crashed | LR sensitivity |\n|";
  for (size_t i = 0; i < std::max<size_t>(1, sweeps.size() - 1); ++i) md << "---|";
  for (size_t i = 0; i < header.size(); ++i) md << "---:|";
  md << "---:|---:|---:|---:|---:|\n";
  for (const LrSetting& s : settings) {
    md << "|";
    for (const auto& [key, value] : s.values) md << " " << value << " |";
    if (s.values.empty()) md << " " << s.label << " |";
    for (const LrPoint& p : s.points) {
      md << " " << fixed4(p.loss);
      if (p.diverged > 0) md << " (" << p.diverged << "/" << p.finished << " diverged)";
      md << " |";
    }
    md << " " << (s.best_lr.empty() ? "-" : s.best_lr) << " | " << fixed4(s.init_loss) << " | " << s.diverged << "/"
       << s.runs << " | " << s.crashed << " | " << fixed4(s.sensitivity) << " |\n";
  }
  return md.str();
}

nlohmann::json lr_sensitivity_json(const std::vector<Sweep>& sweeps, const std::vector<LrSetting>& settings,
                                   const std::vector<SummaryRow>& rows) {
  // NaN is written as null (nlohmann does so for non-finite doubles).
  nlohmann::json j;
  j["lr_key"] = kLrKey;
  j["settings"] = nlohmann::json::array();
  for (const LrSetting& s : settings) {
    nlohmann::json points = nlohmann::json::array();
    for (const LrPoint& p : s.points) {
      points.push_back({{"lr", p.lr}, {"lr_value", p.lr_value}, {"loss", p.loss}, {"finished", p.finished},
                        {"diverged", p.diverged}});
    }
    j["settings"].push_back({{"label", s.label},
                             {"init_loss", s.init_loss},
                             {"best_lr", s.best_lr},
                             {"best_loss", s.best_loss},
                             {"sensitivity", s.sensitivity},
                             {"diverged", s.diverged},
                             {"crashed", s.crashed},
                             {"points", points}});
  }
  j["runs"] = nlohmann::json::array();
  for (const SummaryRow& row : rows) {
    const RunKey key = key_of(sweeps, row.run);
    j["runs"].push_back({{"name", row.run.name},
                         {"label", row.run.label},
                         {"setting", key.label},
                         {"lr", key.lr},
                         {"status", row.status},
                         {"final_loss", final_loss_of(row.summary)},
                         {"init_loss", row.init_loss},
                         {"diverged", row.diverged}});
  }
  return j;
}

}  // namespace zt::ablation
