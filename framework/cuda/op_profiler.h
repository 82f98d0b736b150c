#pragma once
// Device time per op family, measured with CUDA events on the current stream: an OpRange
// records an event when it opens and one when it closes; kernels on one stream run in
// order, so the time between the two is the device time of the work queued inside the
// range. Off by default (an OpRange then costs one branch). Nested ranges count only the
// outermost one, so a family's time is never counted twice. bench_step turns it on.
#include <cstdint>
#include <string>
#include <vector>

namespace zt::cuda {

void profiler_enable(bool on);
bool profiler_enabled();
// A prefix for the names recorded from now on on this thread ("fwd", "bwd", "optim"); "" for none.
void profiler_set_phase(const std::string& phase);

class OpRange {
 public:
  explicit OpRange(const char* family);
  ~OpRange();
  OpRange(const OpRange&) = delete;
  OpRange& operator=(const OpRange&) = delete;

 private:
  int slot_ = -1;        // index of this range's event pair; -1 when not recording
  bool counted_ = false;  // opened while profiling was on (counted in the nesting depth)
};

struct OpTime {
  std::string name;  // "<phase>/<family>"
  double ms = 0;     // summed device time
  int64_t count = 0;
};

// Synchronises the device, sums the recorded ranges by name (sorted by time, largest first)
// and forgets them.
std::vector<OpTime> profiler_collect();

}  // namespace zt::cuda
