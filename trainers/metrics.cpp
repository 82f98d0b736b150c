#include "trainers/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include <sys/stat.h>

#include "framework/error.h"
#include "framework/io/input_file.h"
#include "trainers/checkpoint.h"

namespace zt {

namespace {

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

}  // namespace

nlohmann::json StepMetrics::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  j["step"] = step;
  j["tokens"] = tokens;
  j["lr"] = number(lr);
  j["loss"] = number(loss);
  j["ce_loss"] = number(ce_loss);
  j["z_loss"] = number(z_loss);
  j["lse_mean"] = number(lse_mean);
  j["lse_max"] = number(lse_max);
  j["grad_norm"] = number(grad_norm);
  j["z_loss_weight"] = number(z_loss_weight);
  j["tokens_per_s"] = number(tokens_per_s);
  j["elapsed_s"] = number(elapsed_s);
  if (mfu) j["mfu"] = number(*mfu);
  if (skipped) j["skipped"] = true;
  for (const auto& [name, value] : signals) j[name] = number(value);
  return j;
}

nlohmann::json EvalMetrics::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  j["step"] = step;
  j["tokens"] = tokens;
  j["val_loss"] = number(val_loss);
  j["elapsed_s"] = number(elapsed_s);
  return j;
}

bool is_timing_field(const std::string& key) { return key == "tokens_per_s" || key == "elapsed_s" || key == "mfu"; }

MetricsWriter::MetricsWriter(std::string path, const char* mode) : path_(std::move(path)) {
  f_ = std::fopen(path_.c_str(), mode);
  ZT_CHECK(f_, "cannot open '", path_, "' for writing: ", std::strerror(errno));
}

MetricsWriter::MetricsWriter(MetricsWriter&& o) noexcept
    : path_(std::move(o.path_)), f_(o.f_), notes_(std::move(o.notes_)) {
  o.f_ = nullptr;
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

MetricsWriter MetricsWriter::fresh(const std::string& path) { return MetricsWriter(path, "w"); }

MetricsWriter MetricsWriter::resume(const std::string& path, int64_t step) {
  // Keep every complete record up to the checkpoint's step; drop what the interrupted run
  // wrote after it (those steps run again) and a last line cut short by the crash. A line
  // that is not a record (damaged on disk, edited) is neither kept nor lost: it moves to
  // <path>.damaged, and a note names the line numbers.
  std::string kept, damaged;
  std::vector<int64_t> damaged_lines;
  // A FIFO would block the read forever and a link to /dev/zero never end: whatever is at
  // the path (a dangling link included) must be a regular file.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) io::require_regular_file(path, "metrics file");
  std::ifstream in(path);
  std::string line;
  for (int64_t number = 1; in && std::getline(in, line); ++number) {
    if (in.eof()) break;  // no newline: an unfinished write
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
    }
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
      damaged += line + "\n";
      damaged_lines.push_back(number);
      continue;
    }
    if (j["step"].get<int64_t>() <= step) kept += line + "\n";
  }
  std::vector<std::string> notes;
  if (!damaged_lines.empty()) {
    const std::string aside = path + ".damaged";
    std::FILE* f = std::fopen(aside.c_str(), "a");
    ZT_CHECK(f && std::fwrite(damaged.data(), 1, damaged.size(), f) == damaged.size() && std::fclose(f) == 0,
             "cannot save the damaged lines of '", path, "' to '", aside, "': ", std::strerror(errno));
    std::string numbers;
    for (size_t i = 0; i < damaged_lines.size() && i < 20; ++i)
      numbers += (i ? ", " : "") + std::to_string(damaged_lines[i]);
    if (damaged_lines.size() > 20) numbers += ", ...";
    notes.push_back("note: '" + path + "' had " + std::to_string(damaged_lines.size()) +
                    " line(s) that are not metrics records (line " + numbers + "); moved them to '" + aside + "'");
  }
  write_file_atomic(path, kept);
  MetricsWriter w(path, "a");
  w.notes_ = std::move(notes);
  return w;
}

void MetricsWriter::write(const nlohmann::json& record) {
  const std::string line = record.dump() + "\n";
  ZT_CHECK(std::fwrite(line.data(), 1, line.size(), f_) == line.size() && std::fflush(f_) == 0,
           "writing '", path_, "' failed: ", std::strerror(errno));
}

}  // namespace zt
