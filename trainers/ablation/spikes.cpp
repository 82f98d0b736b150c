#include "trainers/ablation/spikes.h"

#include <algorithm>
#include <cmath>
#include <deque>

#include "framework/error.h"

namespace zt::ablation {

void validate(const SpikeOptions& options) {
  ZT_CHECK(options.window >= 1, "spike window must be >= 1, got ", options.window);
  ZT_CHECK(std::isfinite(options.factor) && options.factor >= 1.0, "spike factor must be finite and >= 1, got ",
           options.factor);
}

std::vector<size_t> find_loss_spikes(std::span<const double> loss, const SpikeOptions& options) {
  validate(options);
  std::vector<size_t> spikes;
  std::deque<double> history;  // the previous (finite) losses, at most `window`
  std::vector<double> scratch;
  for (size_t i = 0; i < loss.size(); ++i) {
    const double x = loss[i];
    if (!std::isfinite(x)) {
      spikes.push_back(i);
      continue;
    }
    if (!history.empty()) {
      scratch.assign(history.begin(), history.end());
      const size_t n = scratch.size();
      auto mid = scratch.begin() + n / 2;
      std::nth_element(scratch.begin(), mid, scratch.end());
      double median = *mid;
      if (n % 2 == 0) median = 0.5 * (median + *std::max_element(scratch.begin(), mid));
      if (x > options.factor * median) spikes.push_back(i);
    }
    history.push_back(x);
    if (static_cast<int64_t>(history.size()) > options.window) history.pop_front();
  }
  return spikes;
}

}  // namespace zt::ablation
