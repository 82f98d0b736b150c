#pragma once
// A progress bar for long-running tools: redrawn in place (at most 10 times a second) when
// the stream is a terminal, one plain line per 10% otherwise (CI logs stay readable).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace zt::data {

class ProgressBar {
 public:
  // total: units of work (bytes, say); out: stderr by default; enabled = false prints nothing.
  ProgressBar(std::string label, int64_t total, bool enabled = true, std::FILE* out = stderr);
  void update(int64_t done, const std::string& detail = "");
  void finish(const std::string& detail = "");

 private:
  std::string label_;
  int64_t total_;
  bool enabled_, tty_;
  std::FILE* out_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
  void draw(int64_t done, const std::string& detail, bool final);
};

}  // namespace zt::data
