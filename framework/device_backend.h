#pragma once
// What Tensor and Storage need from a device other than the host: memory, copies and the few
// elementwise kernels their in-place methods run. The host's own code stays in tensor.cpp
// and storage.cpp; every other device type is one DeviceBackend (CUDA:
// framework/cuda/cuda_backend.cpp), picked by device_backend() in device_backend.cpp, the
// one file of the framework that knows which backends this build has.
//
// All work is issued on the device's current stream (framework/cuda/stream.h) and returns
// without a host synchronisation, except copies to or from the host (see copy).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "framework/device.h"
#include "framework/dtype.h"

namespace zt {

// One bf16 -> f32 widening of widen_bf16_to_f32_many: dst := src, or dst += src when accumulate.
struct WidenJob {
  float* dst = nullptr;
  const void* src = nullptr;  // bf16
  int64_t n = 0;
  bool accumulate = false;
};

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  // Devices of this type that are visible (0 when none).
  virtual int device_count() = 0;
  // Bytes of memory free on `device` now, or 0 when that cannot be asked.
  virtual double free_memory(int device) = 0;

  virtual void* allocate(size_t nbytes, int device) = 0;
  virtual void deallocate(void* ptr, int device) = 0;
  // Raw bytes between the host and this backend's memory or within it. Device to device is
  // stream-ordered and returns at once; to or from the host returns when the data is there.
  virtual void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes) = 0;
  // The host has just waited for the device (a copy to the host): input checks that kernels
  // deferred (framework/cuda/deferred_check.h) run now and may throw.
  virtual void host_waited() = 0;

  // An input check made by kernels (on CUDA, framework/cuda/deferred_check.h): the kernels
  // set device_flag() on bad input and stay safe; after commit(), `on_raised` (which throws,
  // naming the input) runs at the first host wait after those kernels. No synchronisation of
  // its own. wait_input_checks() waits for this thread's pending checks and runs them.
  class InputCheck {
   public:
    virtual ~InputCheck() = default;
    virtual int* device_flag() = 0;
    virtual void commit(std::function<void()> on_raised) = 0;
  };
  virtual std::unique_ptr<InputCheck> input_check() = 0;
  virtual void wait_input_checks() = 0;

  // Contiguous n elements of `device`: dst := src converted to dst's dtype.
  virtual void convert(int device, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) = 0;
  // dst[i...] = src[i...] over `shape` between strided views (strides in elements).
  virtual void strided_copy(int device, void* dst, DType dst_dtype, const std::vector<int64_t>& dst_strides,
                            const void* src, DType src_dtype, const std::vector<int64_t>& src_strides,
                            const std::vector<int64_t>& shape) = 0;
  // Contiguous n elements: dst := value; a += alpha * b (b converted to a's dtype); data *= factor.
  virtual void fill(int device, void* dst, DType dtype, int64_t n, double value) = 0;
  virtual void add_scaled(int device, void* a, DType a_dtype, const void* b, DType b_dtype, int64_t n,
                          double alpha) = 0;
  virtual void scale(int device, void* data, DType dtype, int64_t n, double factor) = 0;
  // Many contiguous bf16 -> f32 widenings on `device` in a few launches (the engine's
  // conversion of bf16 parameter gradients into f32 master gradients).
  virtual void widen_bf16_to_f32_many(int device, const std::vector<WidenJob>& jobs) = 0;
};

// The backend of a device type this build has, or null (the host has none: its code is
// inline in Tensor and Storage; CUDA in a build without it).
DeviceBackend* find_device_backend(DeviceType type);

// The backend of a device that is not the host; fails naming the device when this build has
// no backend for it.
DeviceBackend& device_backend(Device device);

}  // namespace zt
