#include "trainers/ablation/summary.h"

#include "trainers/ablation/lr_sensitivity.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>

namespace zt::ablation {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string fixed(double value, int digits) {
  if (std::isnan(value)) return "-";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", digits, value);
  return buffer;
}

std::string full_precision(double value) {
  if (std::isnan(value)) return "";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.9g", value);
  return buffer;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

std::string markdown_cell(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

// Mean of the finite values; NaN when there are none.
double finite_mean(const std::vector<double>& values) {
  double sum = 0;
  int64_t n = 0;
  for (double v : values) {
    if (std::isfinite(v)) {
      sum += v;
      ++n;
    }
  }
  return n ? sum / static_cast<double>(n) : kNaN;
}

double finite_std(const std::vector<double>& values) {
  const double mean = finite_mean(values);
  double sum = 0;
  int64_t n = 0;
  for (double v : values) {
    if (std::isfinite(v)) {
      sum += (v - mean) * (v - mean);
      ++n;
    }
  }
  return n >= 2 ? std::sqrt(sum / static_cast<double>(n - 1)) : kNaN;
}

}  // namespace

RunSummary summarize(const RunMetrics& metrics, const SpikeOptions& spikes) {
  RunSummary s{};
  s.final_loss = s.final_val_loss = s.best_val_loss = s.mean_lse_last10 = s.max_abs_lse = s.tokens_per_s = kNaN;
  s.initial_val_loss = kNaN;
  s.loss_spikes = 0;

  const auto& steps = metrics.steps;
  if (!steps.empty()) {
    s.steps = steps.back().step;
    s.final_loss = steps.back().loss;
    s.ends_nonfinite = !std::isfinite(steps.back().loss) || !std::isfinite(steps.back().grad_norm);

    const size_t tail = std::max<size_t>(1, (steps.size() + 9) / 10);  // ceil(10%)
    std::vector<double> tail_lse;
    for (size_t i = steps.size() - tail; i < steps.size(); ++i) tail_lse.push_back(steps[i].lse_mean);
    s.mean_lse_last10 = finite_mean(tail_lse);

    for (const StepRecord& r : steps) {
      for (double lse : {r.lse_max, r.lse_mean}) {
        if (std::isfinite(lse) && (std::isnan(s.max_abs_lse) || std::abs(lse) > s.max_abs_lse)) {
          s.max_abs_lse = std::abs(lse);
        }
      }
    }

    std::vector<double> loss, throughput;
    for (const StepRecord& r : steps) loss.push_back(r.loss);
    for (size_t i = 1; i < steps.size(); ++i) throughput.push_back(steps[i].tokens_per_s);
    if (steps.size() == 1) throughput.push_back(steps[0].tokens_per_s);
    s.loss_spikes = count_loss_spikes(loss, spikes);
    s.tokens_per_s = finite_mean(throughput);
  }

  if (!metrics.evals.empty()) {
    s.has_val_loss = true;
    s.final_val_loss = metrics.evals.back().val_loss;
    if (metrics.evals.front().step == 0) s.initial_val_loss = metrics.evals.front().val_loss;
    for (const EvalRecord& e : metrics.evals) {
      if (std::isfinite(e.val_loss) && (std::isnan(s.best_val_loss) || e.val_loss < s.best_val_loss)) {
        s.best_val_loss = e.val_loss;
      }
    }
  }
  return s;
}

std::string summary_markdown(const std::vector<Sweep>& sweeps, const std::vector<SummaryRow>& rows,
                             const SpikeOptions& spikes) {
  std::ostringstream md;
  md << "| run |";
  for (size_t i = 0; i < sweeps.size(); ++i) md << " " << markdown_cell(short_key(sweeps, i)) << " |";
  md << " seed | status | steps | final loss | final val_loss | best val_loss | mean lse (last 10%) |"
        " max \\|lse\\| | loss spikes | tokens/s |\n";
  md << "|---|";
  for (size_t i = 0; i < sweeps.size(); ++i) md << "---|";
  md << "---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const SummaryRow& row : rows) {
    const RunSummary& s = row.summary;
    md << "| " << markdown_cell(row.run.name) << " |";
    for (const auto& [key, value] : row.run.values) md << " " << markdown_cell(value) << " |";
    md << " " << row.run.seed << " | " << row.status << " | " << (s.steps >= 0 ? std::to_string(s.steps) : "-")
       << " | " << fixed(s.final_loss, 4) << " | " << fixed(s.final_val_loss, 4) << " | "
       << fixed(s.best_val_loss, 4) << " | " << fixed(s.mean_lse_last10, 3) << " | " << fixed(s.max_abs_lse, 3)
       << " | " << (s.steps >= 0 ? std::to_string(s.loss_spikes) : "-") << " | " << fixed(s.tokens_per_s, 0)
       << " |\n";
  }
  md << "\nLoss spikes: logged steps whose loss exceeds " << spikes.factor << " x the median of the previous "
     << spikes.window << " logged steps (non-finite losses count too).\n";

  // Settings with several seeds: the mean over the seeds that finished.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const SummaryRow*>> by_setting;
  for (const SummaryRow& row : rows) {
    std::string setting;
    for (const auto& [key, value] : row.run.values) setting += key + "=" + value + " ";
    if (!by_setting.count(setting)) order.push_back(setting);
    by_setting[setting].push_back(&row);
  }
  const bool several_seeds =
      std::any_of(by_setting.begin(), by_setting.end(), [](const auto& kv) { return kv.second.size() > 1; });
  if (several_seeds) {
    md << "\nMean over the finished seeds of each setting (val_loss: mean +- sample std):\n\n| ";
    for (size_t i = 0; i < sweeps.size(); ++i) md << markdown_cell(short_key(sweeps, i)) << " | ";
    md << "seeds done | final val_loss | best val_loss | mean lse (last 10%) | max \\|lse\\| | loss spikes |"
          " tokens/s |\n|";
    for (size_t i = 0; i < sweeps.size(); ++i) md << "---|";
    md << "---:|---:|---:|---:|---:|---:|---:|\n";
    for (const std::string& setting : order) {
      const auto& group = by_setting[setting];
      std::vector<double> final_val, best_val, lse, max_lse, spike_counts, throughput;
      for (const SummaryRow* row : group) {
        if (row->status != "done") continue;
        final_val.push_back(row->summary.final_val_loss);
        best_val.push_back(row->summary.best_val_loss);
        lse.push_back(row->summary.mean_lse_last10);
        max_lse.push_back(row->summary.max_abs_lse);
        spike_counts.push_back(static_cast<double>(row->summary.loss_spikes));
        throughput.push_back(row->summary.tokens_per_s);
      }
      md << "| ";
      for (const auto& [key, value] : group.front()->run.values) md << markdown_cell(value) << " | ";
      const double val_std = finite_std(final_val);
      md << final_val.size() << "/" << group.size() << " | " << fixed(finite_mean(final_val), 4)
         << (std::isnan(val_std) ? "" : " +- " + fixed(val_std, 4)) << " | " << fixed(finite_mean(best_val), 4)
         << " | " << fixed(finite_mean(lse), 3) << " | " << fixed(finite_mean(max_lse), 3) << " | "
         << fixed(finite_mean(spike_counts), 1) << " | " << fixed(finite_mean(throughput), 0) << " |\n";
    }
  }
  if (const auto lr = lr_sensitivity(sweeps, rows)) md << lr_sensitivity_markdown(sweeps, *lr);
  return md.str();
}

std::string summary_csv(const std::vector<Sweep>& sweeps, const std::vector<SummaryRow>& rows) {
  std::ostringstream csv;
  csv << "run";
  for (const Sweep& sweep : sweeps) csv << "," << csv_field(sweep.key);
  csv << ",seed,status,steps,final_loss,final_val_loss,best_val_loss,mean_lse_last10,max_abs_lse,loss_spikes,"
         "tokens_per_s\n";
  for (const SummaryRow& row : rows) {
    const RunSummary& s = row.summary;
    csv << csv_field(row.run.name);
    for (const auto& [key, value] : row.run.values) csv << "," << csv_field(value);
    csv << "," << row.run.seed << "," << row.status << "," << (s.steps >= 0 ? std::to_string(s.steps) : "") << ","
        << full_precision(s.final_loss) << "," << full_precision(s.final_val_loss) << ","
        << full_precision(s.best_val_loss) << "," << full_precision(s.mean_lse_last10) << ","
        << full_precision(s.max_abs_lse) << "," << (s.steps >= 0 ? std::to_string(s.loss_spikes) : "") << ","
        << full_precision(s.tokens_per_s) << "\n";
  }
  return csv.str();
}

}  // namespace zt::ablation
