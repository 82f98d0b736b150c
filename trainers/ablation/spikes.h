#pragma once
// Loss-spike counter for ablation summaries.
//
// A record i is a spike when its loss exceeds `factor` times the median of the losses of the
// previous `window` records (fewer at the start of the series: the first record has no
// history and is never a spike). A non-finite loss (NaN/inf: a diverged step) always counts
// as a spike and is left out of later windows. Every spiking record counts, so a spike that
// lasts three logged steps counts 3. Records are the step records of metrics.jsonl (the
// trainer writes one per optimizer step).
#include <cstdint>
#include <span>
#include <vector>

namespace zt::ablation {

struct SpikeOptions {
  int64_t window = 50;  // W: records in the rolling median
  double factor = 1.5;  // F: loss > F * median counts as a spike
};

// Throws zt::Error unless window >= 1 and factor is finite and >= 1.
void validate(const SpikeOptions& options);

// Indices of the spiking records, ascending.
std::vector<size_t> find_loss_spikes(std::span<const double> loss, const SpikeOptions& options = {});

inline int64_t count_loss_spikes(std::span<const double> loss, const SpikeOptions& options = {}) {
  return static_cast<int64_t>(find_loss_spikes(loss, options).size());
}

}  // namespace zt::ablation
