#pragma once
// What the benchmarks in tools/ share (bench_step, bench_xent, bench_gemm, bench_attention):
// the "needs a GPU" check, the statistics of timed runs, wall-clock and CUDA-event timers,
// and writing a result file. Their command lines and errors go through tools/tool_main.h.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "framework/device.h"
#include "framework/error.h"
#ifdef ZTRAIN_WITH_CUDA
#include <cuda_runtime.h>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"
#endif

namespace zt::bench {

// Fails (exit 1, one line) unless this build has CUDA and a GPU is visible. `context` leads
// the message, e.g. "--device cuda: ".
inline void require_gpu(const std::string& context = "") {
#ifndef ZTRAIN_WITH_CUDA
  ZT_FAIL(context, "this ztrain was built without CUDA");
#else
  ZT_CHECK(cuda_available(), context, "no CUDA GPU visible");
#endif
}

// The median of the samples: the mean of the middle two for an even count.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The nearest-rank percentile: the sorted samples' element round(q (n - 1)). q = 0.5 is the
// median for an odd count and the upper of the middle two for an even one.
inline double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

// Host wall-clock seconds of fn() (which, on a GPU, should end with a synchronisation).
inline double wall_seconds(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

inline bool is_json_path(const std::string& path) {
  return path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
}

// Writes text to the file given as --out, or fails naming it.
inline void write_out_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  ZT_CHECK(f.good(), "--out ", path, ": cannot open for writing");
  f << text;
  f.flush();
  ZT_CHECK(f.good(), "--out ", path, ": write failed");
}

#ifdef ZTRAIN_WITH_CUDA
// Device time between start() and stop_ms() on `stream` (default: the legacy default stream);
// stop_ms() waits for the device.
class EventTimer {
 public:
  explicit EventTimer(cudaStream_t stream = nullptr) : stream_(stream) {
    ZT_CUDA_CHECK(cudaEventCreate(&start_));
    ZT_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void start() { ZT_CUDA_CHECK(cudaEventRecord(start_, stream_)); }
  double stop_ms() {
    ZT_CUDA_CHECK(cudaEventRecord(stop_, stream_));
    ZT_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    ZT_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms;
  }

 private:
  cudaStream_t stream_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Device time in ms of fn over `iters` runs (percentile 0.5 above), CUDA events around each
// run on the current stream and one synchronisation at the end, after `warmup` untimed runs
// (module load, handle creation and tuning stay out of the numbers).
inline double median_ms(const std::function<void()>& fn, int warmup, int iters) {
  cudaStream_t s = cuda::current_stream();
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<cudaEvent_t> ev(static_cast<size_t>(2 * iters), nullptr);
  for (auto& e : ev) ZT_CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < iters; ++i) {
    ZT_CUDA_CHECK(cudaEventRecord(ev[static_cast<size_t>(2 * i)], s));
    fn();
    ZT_CUDA_CHECK(cudaEventRecord(ev[static_cast<size_t>(2 * i + 1)], s));
  }
  ZT_CUDA_CHECK(cudaStreamSynchronize(s));
  ZT_CUDA_CHECK(cudaGetLastError());
  std::vector<double> ms(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    float one = 0;
    ZT_CUDA_CHECK(cudaEventElapsedTime(&one, ev[static_cast<size_t>(2 * i)], ev[static_cast<size_t>(2 * i + 1)]));
    ms[static_cast<size_t>(i)] = one;
  }
  for (auto& e : ev) ZT_CUDA_CHECK(cudaEventDestroy(e));
  return percentile(ms, 0.5);
}
#endif

}  // namespace zt::bench
