#pragma once
// Device timing shared by the CUDA benchmarks (bench_gemm, bench_attention): the median of
// CUDA-event timings on the current stream. Include only in builds with CUDA.
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"

namespace zt::bench {

// Median device time in ms of fn over `iters` runs, CUDA events around each, after `warmup`
// untimed runs (module load, handle creation and tuning stay out of the numbers).
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
  std::vector<float> ms(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i)
    ZT_CUDA_CHECK(cudaEventElapsedTime(&ms[static_cast<size_t>(i)], ev[static_cast<size_t>(2 * i)],
                                       ev[static_cast<size_t>(2 * i + 1)]));
  for (auto& e : ev) ZT_CUDA_CHECK(cudaEventDestroy(e));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace zt::bench
