#pragma once
// Learning rate per step: linear warmup to the peak, then cosine decay to min_lr.
#include <cstdint>

namespace zt {

struct LrSchedule {
  double lr = 0;      // peak
  double min_lr = 0;  // reached at max_steps
  int64_t warmup_steps = 0;
  int64_t max_steps = 1;

  // step is 0-based (the step about to run). Warmup: lr * (step + 1) / warmup_steps, so the
  // first step already moves; then cosine from lr at step == warmup_steps down to min_lr
  // at step == max_steps (held there if training runs longer).
  double at(int64_t step) const;
};

}  // namespace zt
