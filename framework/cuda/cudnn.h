#pragma once
// The framework's cuDNN side: one handle per device (created on first use, bound to the
// current stream on every use), an owning backend descriptor for building cuDNN 9 graphs
// from the C backend API (cudnn-frontend is not used), a device workspace from the caching
// allocator, and the error check that names the failing call. Only in builds with CUDA and
// cuDNN (ZTRAIN_WITH_CUDNN); the graphs themselves live with the ops that use them
// (ops/attention_cudnn.cpp).
#ifdef ZTRAIN_WITH_CUDNN
#include <cudnn_graph.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "framework/error.h"

namespace zt::cuda {

// The device's handle, bound to current_stream(). A zt::Error when cuDNN cannot be
// initialised there (check cudnn_usable first to fall back instead).
cudnnHandle_t cudnn_handle(int device);

// Whether a cuDNN handle can be made on `device` (the library and its sub-libraries load and
// support the GPU). Never throws; the reason is printed under ZT_CUDNN_DEBUG=1.
bool cudnn_usable(int device);

// The loaded library's version, e.g. 91900 for 9.19.0.
int64_t cudnn_version();

// "CUDNN_STATUS_NAME: <cuDNN's last error message>" for a failed call.
std::string cudnn_error_text(cudnnStatus_t status);

// True when the environment sets ZT_CUDNN_DEBUG=1: graph builders then report every step
// that fails (descriptor finalize, heuristics, plan finalize) with cuDNN's message, on stderr.
bool cudnn_debug();
// Prints "[zt cudnn] <message>" to stderr when cudnn_debug().
void cudnn_debug_print(const std::string& message);

// An owning cudnnBackendDescriptor_t. set() keeps the first failure (which attribute, which
// status) instead of throwing, so a graph is built with straight-line code and checked once,
// at finalize(), whose status covers every earlier set().
class BackendDescriptor {
 public:
  BackendDescriptor() = default;
  explicit BackendDescriptor(cudnnBackendDescriptorType_t type);
  ~BackendDescriptor();
  BackendDescriptor(BackendDescriptor&& other) noexcept;
  BackendDescriptor& operator=(BackendDescriptor&& other) noexcept;
  BackendDescriptor(const BackendDescriptor&) = delete;
  BackendDescriptor& operator=(const BackendDescriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return desc_; }

  BackendDescriptor& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                         const void* values);
  BackendDescriptor& set(cudnnBackendAttributeName_t name, int64_t value);
  BackendDescriptor& set(cudnnBackendAttributeName_t name, const std::vector<int64_t>& values);
  BackendDescriptor& set(cudnnBackendAttributeName_t name, cudnnDataType_t value);
  BackendDescriptor& set_bool(cudnnBackendAttributeName_t name, bool value);
  BackendDescriptor& set(cudnnBackendAttributeName_t name, const BackendDescriptor& value);

  // Finalizes the descriptor; returns the first failure of an earlier set(), or finalize's own
  // status. failure() then says which call failed and why.
  cudnnStatus_t finalize();
  const std::string& failure() const { return failure_; }

 private:
  void fail(cudnnStatus_t status, const std::string& what);
  cudnnBackendDescriptor_t desc_ = nullptr;
  cudnnStatus_t status_ = CUDNN_STATUS_SUCCESS;
  std::string failure_;
};

// Device memory for one cuDNN execution, from the caching allocator (cuda_memory.h). Freed
// when it goes out of scope: the block is reused only by work queued after the execution on
// the same stream, so that is safe without a synchronisation.
class DeviceWorkspace {
 public:
  DeviceWorkspace(size_t bytes, int device);
  ~DeviceWorkspace();
  DeviceWorkspace(const DeviceWorkspace&) = delete;
  DeviceWorkspace& operator=(const DeviceWorkspace&) = delete;
  void* data() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  int device_ = 0;
};

}  // namespace zt::cuda

// Turns a failed cuDNN call into a zt::Error naming the call, file and line, with cuDNN's
// status name and last error message.
#define ZT_CUDNN_CHECK(expr)                                                                          \
  do {                                                                                                \
    const cudnnStatus_t zt_st_ = (expr);                                                              \
    if (zt_st_ != CUDNN_STATUS_SUCCESS)                                                               \
      ZT_FAIL("cuDNN error in ", #expr, " at ", __FILE__, ":", __LINE__, ": ",                        \
              ::zt::cuda::cudnn_error_text(zt_st_));                                                  \
  } while (0)

#endif  // ZTRAIN_WITH_CUDNN
