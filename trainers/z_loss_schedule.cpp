#include "trainers/z_loss_schedule.h"

#include "framework/error.h"

namespace zt {

double ZLossSchedule::at(int64_t step) const {
  if (kind == "constant") return weight;
  ZT_CHECK(kind == "linear_warmup", "unknown z-loss schedule '", kind, "' (expected constant or linear_warmup)");
  if (warmup_steps <= 0 || step >= warmup_steps) return weight;
  const double f = static_cast<double>(step) / static_cast<double>(warmup_steps);
  return start + (weight - start) * f;
}

}  // namespace zt
