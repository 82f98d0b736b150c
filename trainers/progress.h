#pragma once
// What a person watching `train` sees. On a terminal: one progress line rewritten in place
// (step/total, loss, tokens/s, ETA), with events (evaluations, checkpoints) printed above
// it. Otherwise (a log file, CI): one plain line every log_every steps, plus the events.
#include <cstdint>
#include <cstdio>
#include <string>

namespace zt {

// The log steps of a run of `total` steps: step 1, every log_every-th, the last. Plain progress
// lines and the instability signals in metrics.jsonl come at these.
inline bool is_log_step(int64_t step, int64_t log_every, int64_t total) {
  return step == 1 || step % log_every == 0 || step == total;
}

class Progress {
 public:
  Progress(std::FILE* out, bool terminal, int64_t total_steps, int64_t log_every);

  // After each step. `seconds_per_step` is a recent average, for the ETA.
  void step(int64_t step, double loss, double tokens_per_s, double seconds_per_step, double lr, double grad_norm);
  // A line that stays (evaluation result, checkpoint written, warnings).
  void event(const std::string& line);
  // Ends the in-place line so later output starts on a fresh line.
  void finish();

  bool closed() const { return closed_; }  // the reader went away; nothing more is written

  static bool is_terminal(std::FILE* f);
  static std::string format_duration(double seconds);  // "45s", "3m07s", "2h05m"

 private:
  std::FILE* out_;
  bool terminal_;
  int64_t total_, log_every_;
  bool line_open_ = false;
  bool closed_ = false;
  void flush();
};

}  // namespace zt
