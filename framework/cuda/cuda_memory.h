#pragma once
// CUDA side of Storage: device allocation and copies. Built only with ZTRAIN_CUDA; the
// CPU-only build never includes this header.
//
// allocate/deallocate go through a caching allocator: a freed block goes back to a free list
// of its size bucket on its device and the next allocation of that bucket takes it, so a
// training step that repeats the previous step's allocations calls neither cudaMalloc nor
// cudaFree. Sizes round up to a bucket (512 B steps below 1 MiB, then 8 buckets per power of
// two: at most 12.5% slack). When cudaMalloc fails the cached blocks are released and the
// call retried once.
//
// Reuse is safe because ztrain issues all device work on one stream per device (stream.h):
// a block freed on the host is reused by work queued after everything that used it. Work on
// another stream that outlives its tensors would need events per block; nothing does that.
#include <cstddef>
#include <cstdint>

namespace zt::cuda {

void* allocate(size_t nbytes, int device);
void deallocate(void* ptr, int device);
// A copy on the current stream (stream.h), ordered after the work queued there and before
// the work queued after it (so also inside a CUDA graph capture, for device to device).
// Device to device: queued only, the host does not wait. To or from the host: the host waits
// for that stream (not the whole device), so host data is ready to read and a host source
// may be freed when the call returns. Devices of the pointers: unified addressing.
void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes);

// Copies through copy() so far between host and device memory. Each one makes the host wait
// for the stream, so benchmarks count them per step (bench_step).
struct HostCopyCounts {
  int64_t to_host = 0;
  int64_t to_device = 0;
};
HostCopyCounts host_copy_counts();
int device_count();

// Bytes of device memory held through allocate() on `device`: now, and the most since the
// last reset_peak_allocated() (benchmarks read these to report the extra memory an op takes).
size_t allocated_bytes(int device);
size_t peak_allocated_bytes(int device);
void reset_peak_allocated(int device);

struct MemoryStats {
  size_t allocated = 0;       // bytes requested by live allocations
  size_t peak_allocated = 0;  // most of the above since the last reset_peak_allocated()
  size_t reserved = 0;        // bytes obtained from cudaMalloc (live blocks + cached free blocks)
  size_t peak_reserved = 0;
  int64_t cuda_mallocs = 0;   // calls to cudaMalloc so far (flat in the steady state)
  int64_t cuda_frees = 0;     // blocks returned to CUDA (only on out-of-memory or empty_cache)
  int64_t cache_hits = 0;     // allocations served from a free list
};
MemoryStats memory_stats(int device = 0);

// Returns every cached free block of `device` to CUDA (live blocks stay).
void empty_cache(int device = 0);

// The bucket size a request of nbytes is served from (exposed for tests).
size_t allocation_bucket(size_t nbytes);

}  // namespace zt::cuda
