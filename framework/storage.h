#pragma once
// A reference-counted block of device memory. Tensors are views into one Storage;
// views share it through shared_ptr, so the block lives as long as any view does.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "framework/device.h"

namespace zt {

class Storage {
 public:
  // Allocates nbytes on device: 64-byte aligned host memory (SIMD loads), or device memory
  // from the CUDA allocator.
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

  // Identifies the storage's contents: a value no other storage or earlier contents had.
  // Tensor's in-place writes (copy_, fill_, add_, scale_) change it, and so must code that
  // writes the memory by other means (AdamW's update); caches of values computed from the
  // contents (framework/autograd/mixed_precision.h) compare it. Writes through data<T>() pointers are not seen.
  uint64_t version() const { return version_; }
  void bump_version();

 private:
  uint64_t version_;
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

// Raw byte copy between any two devices (host<->device, device<->device), on the current
// CUDA stream when a device is involved: device to device is stream-ordered and returns at
// once; to or from the host returns when the data is there (framework/cuda/cuda_memory.h).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

}  // namespace zt
