#pragma once
// The runs of an ablation: the cartesian product of the sweeps times the seeds, and the name
// of each run (its directory under the ablation directory).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "trainers/ablation/sweep.h"

namespace zt::ablation {

struct RunSpec {
  // (key, value) per sweep, in sweep order.
  std::vector<std::pair<std::string, std::string>> values;
  int64_t seed = 0;
  // Directory name, filesystem-safe: "z_loss_weight=1e-4_seed=0".
  std::string name;
  // For progress lines and legends: "z_loss_weight=1e-4 seed=0".
  std::string label;
};

// The most runs one grid may hold (settings x seeds).
constexpr size_t kMaxGridRuns = 10000;

// Order: the first sweep varies slowest, the seed fastest, so all seeds of one setting run
// back to back. Throws zt::Error when seeds < 1, a key is swept twice, train.seed or
// log.out_dir is swept (ablate owns them), the grid has more than kMaxGridRuns runs, or two runs would get the same directory name.
std::vector<RunSpec> expand_grid(const std::vector<Sweep>& sweeps, int64_t seeds);

// The short name of a swept key in run names: its last part ("z_loss_weight"), or the whole
// key when another sweep shares that last part.
std::string short_key(const std::vector<Sweep>& sweeps, size_t index);

// Replaces every character outside [A-Za-z0-9._+=-] with '_'.
std::string filesystem_safe(const std::string& text);

}  // namespace zt::ablation
