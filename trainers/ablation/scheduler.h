#pragma once
// Where the runs of an ablation go when several run at once (ablate --jobs N [--devices ...]),
// and the sweep-level progress estimate.
//
// Runs are started into N slots; a run that ends frees its slot for the next one. With
// --devices D0,D1,..., slot k runs on cuda:D[k mod len(D)] (several slots may share a GPU),
// given to the run by its config (--set train.device=cuda:K), never by an environment
// variable. Without --devices, a run whose config puts it on the CPU (train.device cpu, or
// auto without a CUDA device) and leaves train.threads at 0 gets --set
// train.threads=max(1, cores / N), so N runs do not each start one thread per core (N, not
// the runs left, so a run resumed by a rerun with the same N gets the same thread count). These placement settings are not part of a run's identity:
// a run may resume in another slot, on another device, with another thread count.
#include <cstdint>
#include <string>
#include <vector>

namespace zt::ablation {

// "0,1,3" -> {0, 1, 3}. Throws zt::Error naming the list on an empty item, a non-integer,
// a negative id or a repeated one.
std::vector<int64_t> parse_devices(const std::string& list);

// CPUs this process may run on (its affinity mask), at least 1.
int64_t available_cores();

// max(1, cores / jobs).
int64_t threads_per_run(int64_t cores, int64_t jobs);

// The placement --set values of the run started in `slot`: train.device=cuda:K when devices
// is non-empty; else train.threads=T when the run is a CPU run without its own thread count
// and cpu_threads > 0 (T = cpu_threads); else none.
std::vector<std::string> placement_sets(const std::vector<int64_t>& devices, size_t slot, bool cpu_run,
                                        bool threads_set, int64_t cpu_threads);

// Seconds until the sweep ends, from the mean duration of the runs that ended in this
// invocation: the running runs' expected rest (mean - elapsed, at least 0) plus `left` runs of
// the mean, spread over `jobs` slots, and never less than the longest expected rest of a
// running run. Negative (unknown) when no run has ended yet (mean_seconds < 0).
double estimate_eta(double mean_seconds, const std::vector<double>& running_elapsed, size_t left, int64_t jobs);

// "45 s", "12 min 5 s", "3 h 4 min"; "?" for a negative value.
std::string format_duration(double seconds);

}  // namespace zt::ablation
