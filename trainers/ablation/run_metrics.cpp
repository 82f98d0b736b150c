#include "trainers/ablation/run_metrics.h"

#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "framework/error.h"

namespace zt::ablation {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double number_or_nan(const nlohmann::json& record, const char* key, const std::string& where) {
  auto it = record.find(key);
  if (it == record.end() || it->is_null()) return kNaN;
  ZT_CHECK(it->is_number(), where, ": \"", key, "\" is not a number: ", it->dump());
  return it->get<double>();
}

// Appends a record keeping the series ascending: a repeated or earlier step replaces the tail.
template <class Record>
void append_in_step_order(std::vector<Record>& series, Record record) {
  while (!series.empty() && series.back().step >= record.step) series.pop_back();
  series.push_back(record);
}

}  // namespace

RunMetrics parse_metrics(const std::string& text, const std::string& source) {
  RunMetrics metrics;
  size_t pos = 0;
  int64_t line_number = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const bool last_unterminated = end == std::string::npos;
    if (last_unterminated) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;

    const std::string where = source + ":" + std::to_string(line_number);
    nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded()) {
      if (last_unterminated) break;  // cut short by a kill mid-write
      ZT_FAIL(where, ": not a JSON object: ", line.substr(0, 120));
    }
    ZT_CHECK(record.is_object(), where, ": not a JSON object: ", line.substr(0, 120));
    const bool is_step = record.contains("loss");
    const bool is_eval = record.contains("val_loss");
    if (!is_step && !is_eval) continue;  // other records (run info) are not series
    auto step_it = record.find("step");
    ZT_CHECK(step_it != record.end() && step_it->is_number_integer(), where,
             ": a record with loss or val_loss needs an integer \"step\"");
    const int64_t step = step_it->get<int64_t>();

    if (is_step) {
      StepRecord r;
      r.step = step;
      r.tokens = number_or_nan(record, "tokens", where);
      r.lr = number_or_nan(record, "lr", where);
      r.loss = number_or_nan(record, "loss", where);
      r.ce_loss = number_or_nan(record, "ce_loss", where);
      r.z_loss = number_or_nan(record, "z_loss", where);
      r.lse_mean = number_or_nan(record, "lse_mean", where);
      r.lse_max = number_or_nan(record, "lse_max", where);
      r.grad_norm = number_or_nan(record, "grad_norm", where);
      r.z_loss_weight = number_or_nan(record, "z_loss_weight", where);
      r.tokens_per_s = number_or_nan(record, "tokens_per_s", where);
      append_in_step_order(metrics.steps, r);
    }
    if (is_eval) append_in_step_order(metrics.evals, EvalRecord{step, number_or_nan(record, "val_loss", where)});
  }
  return metrics;
}

RunMetrics read_metrics(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  ZT_CHECK(in.good(), file.string(), ": cannot open the metrics file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parse_metrics(buffer.str(), file.string());
}

RunMetrics read_metrics_if_present(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) return {};
  return read_metrics(file);
}

}  // namespace zt::ablation
