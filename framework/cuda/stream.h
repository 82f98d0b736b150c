#pragma once
// The CUDA stream that ztrain issues its kernels, collectives and tensor copies
// (cuda_memory.h) on, per host thread. It starts as the legacy default stream (0), which
// orders itself with every blocking stream. Set another stream with StreamGuard, e.g. to
// capture a CUDA graph (capture needs a non-default stream): copies follow it.
#include <cuda_runtime.h>

namespace zt::cuda {

cudaStream_t current_stream();

class StreamGuard {
 public:
  explicit StreamGuard(cudaStream_t stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  cudaStream_t previous_;
};

// Multiprocessor count of a device, read once per device (sizes persistent grids; the
// query itself is slow and must stay out of graph captures).
int multiprocessor_count(int device);

// Makes `device` current for this thread if it is not already (cheap when it is).
void set_device(int device);

}  // namespace zt::cuda
