#include "trainers/progress.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>

namespace zt {

Progress::Progress(std::FILE* out, bool terminal, int64_t total_steps, int64_t log_every)
    : out_(out), terminal_(terminal), total_(total_steps), log_every_(log_every) {}

bool Progress::is_terminal(std::FILE* f) { return ::isatty(::fileno(f)) == 1; }

std::string Progress::format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long long t = std::llround(s);
  if (t < 60) std::snprintf(buf, sizeof buf, "%llds", t);
  else if (t < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
  return buf;
}

void Progress::step(int64_t step, double loss, double tokens_per_s, double seconds_per_step, double lr,
                    double grad_norm) {
  if (closed_ || (!terminal_ && !is_log_step(step, log_every_, total_))) return;
  const double eta = seconds_per_step * static_cast<double>(total_ - step);
  char buf[256];
  std::snprintf(buf, sizeof buf, "step %lld/%lld | loss %.4f | lr %.3g | grad_norm %.3f | %.0f tok/s | ETA %s",
                static_cast<long long>(step), static_cast<long long>(total_), loss, lr, grad_norm, tokens_per_s,
                format_duration(eta).c_str());
  if (terminal_) {
    std::fprintf(out_, "\r%s\033[K", buf);
    line_open_ = true;
  } else {
    std::fprintf(out_, "%s\n", buf);
  }
  flush();
}

void Progress::flush() {
  errno = 0;
  if (std::fflush(out_) != 0 || std::ferror(out_)) {
    // A reader that went away (`train | head -1`): stop writing; training goes on.
    if (errno == EPIPE) closed_ = true;
    std::clearerr(out_);
  }
}

void Progress::event(const std::string& line) {
  if (closed_) return;
  if (line_open_) std::fprintf(out_, "\r\033[K");
  std::fprintf(out_, "%s\n", line.c_str());
  line_open_ = false;
  flush();
}

void Progress::finish() {
  if (closed_) return;
  if (line_open_) std::fprintf(out_, "\n");
  line_open_ = false;
  flush();
}

}  // namespace zt
