#pragma once
// The z-loss weight per step. It is a runtime argument of the cross-entropy op, so a
// schedule costs nothing: each step passes the current value (and logs it).
#include <cstdint>
#include <string>

namespace zt {

struct ZLossSchedule {
  std::string kind = "constant";  // constant | linear_warmup
  double weight = 0;              // the target (constant: always)
  double start = 0;               // linear_warmup: value at step 0
  int64_t warmup_steps = 0;       // linear_warmup: steps to reach `weight`

  double at(int64_t step) const;  // 0-based step
};

}  // namespace zt
