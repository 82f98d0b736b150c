#pragma once
// A reference-counted block of device memory. Tensors are views into one Storage;
// views share it through shared_ptr, so the block lives as long as any view does.
#include <cstddef>
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

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

// Raw byte copy between any two devices (host<->device, device<->device).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

}  // namespace zt
