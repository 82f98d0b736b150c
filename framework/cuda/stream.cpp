#include "framework/cuda/stream.h"

#include <array>
#include <atomic>

#include "framework/cuda/cuda_check.h"

namespace zt::cuda {

namespace {
thread_local cudaStream_t t_current = nullptr;
constexpr int kMaxDevices = 64;
std::array<std::atomic<int>, kMaxDevices> g_sm_count{};  // 0: not read yet
}  // namespace

cudaStream_t current_stream() { return t_current; }

StreamGuard::StreamGuard(cudaStream_t stream) : previous_(t_current) { t_current = stream; }
StreamGuard::~StreamGuard() { t_current = previous_; }

int multiprocessor_count(int device) {
  ZT_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " out of range");
  int n = g_sm_count[device].load(std::memory_order_relaxed);
  if (n == 0) {
    ZT_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    g_sm_count[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

void set_device(int device) {
  int current = -1;
  ZT_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device) ZT_CUDA_CHECK(cudaSetDevice(device));
}

}  // namespace zt::cuda
