#include "trainers/data/progress_bar.h"

#include <unistd.h>

#include <algorithm>

namespace zt::data {

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled, std::FILE* out)
    : label_(std::move(label)), total_(std::max<int64_t>(total, 1)), enabled_(enabled),
      tty_(enabled && ::isatty(::fileno(out))), out_(out), start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(int64_t done, const std::string& detail) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    draw(done, detail, false);
    return;
  }
  const int decile = static_cast<int>(std::min<int64_t>(done * 10 / total_, 10));
  if (decile > last_decile_ && decile < 10) {
    last_decile_ = decile;
    draw(done, detail, false);
  }
}

void ProgressBar::finish(const std::string& detail) {
  if (enabled_) draw(total_, detail, true);
}

void ProgressBar::draw(int64_t done, const std::string& detail, bool final) {
  const double fraction = std::clamp(static_cast<double>(done) / static_cast<double>(total_), 0.0, 1.0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, ' ');
    std::fprintf(out_, "\r%s [%s] %3d%% %5.1fs %s\033[K%s", label_.c_str(), bar.c_str(),
                 static_cast<int>(fraction * 100), seconds, detail.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(out_, "%s: %3d%% %.1fs %s\n", label_.c_str(), static_cast<int>(fraction * 100), seconds,
                 detail.c_str());
  }
  std::fflush(out_);
}

}  // namespace zt::data
