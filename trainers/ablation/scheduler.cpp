#include "trainers/ablation/scheduler.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>
#include <thread>

#include "framework/error.h"

namespace zt::ablation {

std::vector<int64_t> parse_devices(const std::string& list) {
  std::vector<int64_t> devices;
  std::set<int64_t> seen;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    const std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    ZT_CHECK(!item.empty(), "--devices '", list, "': item ", devices.size() + 1,
             " is empty (expected CUDA device ids such as 0,1)");
    char* end = nullptr;
    const long long id = std::strtoll(item.c_str(), &end, 10);
    ZT_CHECK(end == item.c_str() + item.size() && item.find_first_not_of("0123456789") == std::string::npos,
             "--devices '", list, "': '", item, "' is not a CUDA device id (a non-negative integer)");
    ZT_CHECK(seen.insert(id).second, "--devices '", list, "': device ", id, " is listed twice");
    devices.push_back(id);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return devices;
}

int64_t available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max<int64_t>(1, std::thread::hardware_concurrency());
}

int64_t threads_per_run(int64_t cores, int64_t jobs) { return std::max<int64_t>(1, cores / std::max<int64_t>(1, jobs)); }

std::vector<std::string> placement_sets(const std::vector<int64_t>& devices, size_t slot, bool cpu_run,
                                        bool threads_set, int64_t cpu_threads) {
  if (!devices.empty()) return {"train.device=cuda:" + std::to_string(devices[slot % devices.size()])};
  if (cpu_run && !threads_set && cpu_threads > 0) return {"train.threads=" + std::to_string(cpu_threads)};
  return {};
}

double estimate_eta(double mean_seconds, const std::vector<double>& running_elapsed, size_t left, int64_t jobs) {
  if (mean_seconds < 0) return -1;
  double work = static_cast<double>(left) * mean_seconds, longest = 0;
  for (double elapsed : running_elapsed) {
    const double rest = std::max(0.0, mean_seconds - elapsed);
    work += rest;
    longest = std::max(longest, rest);
  }
  return std::max(longest, work / static_cast<double>(std::max<int64_t>(1, jobs)));
}

std::string format_duration(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) return "?";
  const int64_t s = std::llround(seconds);
  if (s < 60) return std::to_string(s) + " s";
  if (s < 3600) return std::to_string(s / 60) + " min " + std::to_string(s % 60) + " s";
  return std::to_string(s / 3600) + " h " + std::to_string(s % 3600 / 60) + " min";
}

}  // namespace zt::ablation
