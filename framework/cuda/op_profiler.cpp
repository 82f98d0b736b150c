#include "framework/cuda/op_profiler.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"

namespace zt::cuda {

namespace {

struct Range {
  std::string name;
  cudaEvent_t start = nullptr, stop = nullptr;
};

std::mutex g_mu;
bool g_enabled = false;
std::vector<Range> g_ranges;  // recorded since the last collect; events are reused across collects
size_t g_used = 0;
thread_local std::string t_phase;
thread_local int t_depth = 0;

}  // namespace

void profiler_enable(bool on) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_enabled = on;
}

bool profiler_enabled() { return g_enabled; }

void profiler_set_phase(const std::string& phase) { t_phase = phase; }

OpRange::OpRange(const char* family) {
  if (!g_enabled) return;
  counted_ = true;
  if (t_depth++ > 0) return;
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_used == g_ranges.size()) {
    Range r;
    ZT_CUDA_CHECK(cudaEventCreate(&r.start));
    ZT_CUDA_CHECK(cudaEventCreate(&r.stop));
    g_ranges.push_back(r);
  }
  slot_ = static_cast<int>(g_used++);
  Range& r = g_ranges[static_cast<size_t>(slot_)];
  r.name = t_phase.empty() ? std::string(family) : t_phase + "/" + family;
  ZT_CUDA_CHECK(cudaEventRecord(r.start, current_stream()));
}

OpRange::~OpRange() {
  if (!counted_) return;
  --t_depth;
  if (slot_ < 0) return;
  std::lock_guard<std::mutex> lock(g_mu);
  cudaEventRecord(g_ranges[static_cast<size_t>(slot_)].stop, current_stream());  // no throw from a destructor
}

std::vector<OpTime> profiler_collect() {
  ZT_CUDA_CHECK(cudaDeviceSynchronize());
  std::lock_guard<std::mutex> lock(g_mu);
  std::map<std::string, OpTime> by_name;
  for (size_t i = 0; i < g_used; ++i) {
    float ms = 0;
    ZT_CUDA_CHECK(cudaEventElapsedTime(&ms, g_ranges[i].start, g_ranges[i].stop));
    OpTime& t = by_name[g_ranges[i].name];
    t.name = g_ranges[i].name;
    t.ms += ms;
    ++t.count;
  }
  g_used = 0;
  std::vector<OpTime> out;
  for (auto& [name, t] : by_name) out.push_back(t);
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace zt::cuda
