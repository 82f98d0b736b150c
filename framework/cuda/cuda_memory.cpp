#include "framework/cuda/cuda_memory.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"

namespace zt::cuda {

namespace {

constexpr int kMaxDevices = 64;
constexpr size_t kSmallStep = 512;         // bucket step below kSmallLimit
constexpr size_t kSmallLimit = size_t{1} << 20;
constexpr int kBucketsPerPowerOfTwo = 8;

struct Block {
  size_t bucket = 0;     // bytes held from CUDA
  size_t requested = 0;  // bytes the caller asked for
};

// One device's pool. Every field is guarded by mu.
struct Pool {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_lists;  // bucket size -> cached blocks
  std::unordered_map<void*, Block> live;
  size_t allocated = 0, peak_allocated = 0, reserved = 0, peak_reserved = 0;
  int64_t cuda_mallocs = 0, cuda_frees = 0, cache_hits = 0;

  // Frees every cached block (mu held).
  void release_cached(int device) {
    cudaSetDevice(device);
    for (auto& [bucket, blocks] : free_lists) {
      for (void* p : blocks) {
        cudaFree(p);
        reserved -= bucket;
        ++cuda_frees;
      }
    }
    free_lists.clear();
  }
};

// Never destroyed: tensors held by static objects may be freed after main returns, and the
// driver reclaims device memory at exit anyway.
std::array<Pool, kMaxDevices>& pools() {
  static auto* p = new std::array<Pool, kMaxDevices>();
  return *p;
}

Pool& pool(int device) {
  ZT_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " out of range");
  return pools()[static_cast<size_t>(device)];
}

}  // namespace

size_t allocation_bucket(size_t nbytes) {
  if (nbytes == 0) nbytes = 1;
  if (nbytes <= kSmallLimit) return (nbytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  size_t pow2 = kSmallLimit;
  while (pow2 < nbytes) pow2 <<= 1;  // nbytes in (pow2 / 2, pow2]
  const size_t step = pow2 / 2 / kBucketsPerPowerOfTwo;
  return (nbytes + step - 1) / step * step;
}

void* allocate(size_t nbytes, int device) {
  Pool& pl = pool(device);
  const size_t bucket = allocation_bucket(nbytes);
  std::lock_guard<std::mutex> lock(pl.mu);
  void* p = nullptr;
  auto it = pl.free_lists.find(bucket);
  if (it != pl.free_lists.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    ++pl.cache_hits;
  } else {
    int current = -1;
    ZT_CUDA_CHECK(cudaGetDevice(&current));
    if (current != device) ZT_CUDA_CHECK(cudaSetDevice(device));
    cudaError_t err = cudaMalloc(&p, bucket);
    if (err == cudaErrorMemoryAllocation) {  // give back what the cache holds, then try once more
      cudaGetLastError();
      pl.release_cached(device);
      err = cudaMalloc(&p, bucket);
    }
    if (current != device && current >= 0) cudaSetDevice(current);
    if (err != cudaSuccess) {
      cudaGetLastError();
      ZT_FAIL("CUDA out of memory: allocating ", nbytes, " bytes on cuda:", device, " (", pl.allocated,
              " bytes in use by tensors, ", pl.reserved, " reserved): ", cudaGetErrorString(err));
    }
    ++pl.cuda_mallocs;
    pl.reserved += bucket;
    pl.peak_reserved = std::max(pl.peak_reserved, pl.reserved);
  }
  pl.live[p] = Block{bucket, nbytes};
  pl.allocated += nbytes;
  pl.peak_allocated = std::max(pl.peak_allocated, pl.allocated);
  return p;
}

void deallocate(void* ptr, int device) {
  if (!ptr || device < 0 || device >= kMaxDevices) return;
  Pool& pl = pools()[static_cast<size_t>(device)];
  std::lock_guard<std::mutex> lock(pl.mu);
  auto it = pl.live.find(ptr);
  if (it == pl.live.end()) return;  // not ours: never happens through Storage
  pl.allocated -= it->second.requested;
  pl.free_lists[it->second.bucket].push_back(ptr);
  pl.live.erase(it);
}

namespace {
std::atomic<int64_t> g_copies_to_host{0}, g_copies_to_device{0};
}  // namespace

void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes) {
  if (nbytes == 0) return;
  const cudaStream_t stream = current_stream();
  ZT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, stream));
  if (dst_on_device && src_on_device) return;
  // Pageable host memory: the copy may still be reading the source or writing the
  // destination when cudaMemcpyAsync returns.
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream));
  ++(dst_on_device ? g_copies_to_device : g_copies_to_host);
}

HostCopyCounts host_copy_counts() { return {g_copies_to_host.load(), g_copies_to_device.load()}; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

size_t allocated_bytes(int device) {
  Pool& pl = pool(device);
  std::lock_guard<std::mutex> lock(pl.mu);
  return pl.allocated;
}

size_t peak_allocated_bytes(int device) {
  Pool& pl = pool(device);
  std::lock_guard<std::mutex> lock(pl.mu);
  return pl.peak_allocated;
}

void reset_peak_allocated(int device) {
  Pool& pl = pool(device);
  std::lock_guard<std::mutex> lock(pl.mu);
  pl.peak_allocated = pl.allocated;
  pl.peak_reserved = pl.reserved;
}

MemoryStats memory_stats(int device) {
  Pool& pl = pool(device);
  std::lock_guard<std::mutex> lock(pl.mu);
  MemoryStats s;
  s.allocated = pl.allocated;
  s.peak_allocated = pl.peak_allocated;
  s.reserved = pl.reserved;
  s.peak_reserved = pl.peak_reserved;
  s.cuda_mallocs = pl.cuda_mallocs;
  s.cuda_frees = pl.cuda_frees;
  s.cache_hits = pl.cache_hits;
  return s;
}

void empty_cache(int device) {
  Pool& pl = pool(device);
  std::lock_guard<std::mutex> lock(pl.mu);
  // Blocks freed on the host may still be read by queued kernels: drain the device first.
  cudaSetDevice(device);
  cudaDeviceSynchronize();
  pl.release_cached(device);
}

}  // namespace zt::cuda
