#ifdef ZTRAIN_WITH_CUDNN
#include "framework/cuda/cudnn.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "framework/cuda/cuda_memory.h"
#include "framework/cuda/stream.h"

namespace zt::cuda {

namespace {

constexpr int kMaxDevices = 64;

struct DeviceCudnn {
  std::once_flag once;
  cudnnHandle_t handle = nullptr;
  std::string error;  // why no handle could be made ("" when there is one)
};

// Never destroyed (like the allocator and the cuBLASLt handles): they outlive static tensors.
std::array<DeviceCudnn, kMaxDevices>& devices() {
  static auto* d = new std::array<DeviceCudnn, kMaxDevices>();
  return *d;
}

DeviceCudnn& device_cudnn(int device) {
  ZT_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " out of range");
  DeviceCudnn& d = devices()[static_cast<size_t>(device)];
  std::call_once(d.once, [&] {
    set_device(device);
    const cudnnStatus_t s = cudnnCreate(&d.handle);
    if (s != CUDNN_STATUS_SUCCESS) {
      d.handle = nullptr;
      d.error = "cudnnCreate on device " + std::to_string(device) + ": " + cudnn_error_text(s);
      cudnn_debug_print(d.error);
    } else if (cudnn_version() < 90000) {
      d.error = "cuDNN " + std::to_string(cudnn_version()) + " is loaded; the graphs here need cuDNN 9";
      cudnn_debug_print(d.error);
    }
  });
  return d;
}

}  // namespace

cudnnHandle_t cudnn_handle(int device) {
  DeviceCudnn& d = device_cudnn(device);
  ZT_CHECK(d.error.empty(), "cuDNN unusable: ", d.error);
  ZT_CUDNN_CHECK(cudnnSetStream(d.handle, current_stream()));
  return d.handle;
}

bool cudnn_usable(int device) {
  if (device < 0 || device >= kMaxDevices) return false;
  return device_cudnn(device).error.empty();
}

int64_t cudnn_version() { return static_cast<int64_t>(cudnnGetVersion()); }

std::string cudnn_error_text(cudnnStatus_t status) {
  std::array<char, 1024> message{};
  cudnnGetLastErrorString(message.data(), message.size());
  std::string text = cudnnGetErrorString(status);
  if (message[0] != '\0') text += std::string(": ") + message.data();
  return text;
}

bool cudnn_debug() {
  static const bool on = [] {
    const char* e = std::getenv("ZT_CUDNN_DEBUG");
    return e && e[0] == '1';
  }();
  return on;
}

void cudnn_debug_print(const std::string& message) {
  if (cudnn_debug()) std::fprintf(stderr, "[zt cudnn] %s\n", message.c_str());
}

// ---- BackendDescriptor ----

BackendDescriptor::BackendDescriptor(cudnnBackendDescriptorType_t type) {
  const cudnnStatus_t s = cudnnBackendCreateDescriptor(type, &desc_);
  if (s != CUDNN_STATUS_SUCCESS) {
    desc_ = nullptr;
    fail(s, "cudnnBackendCreateDescriptor(type " + std::to_string(static_cast<int>(type)) + ")");
  }
}

BackendDescriptor::~BackendDescriptor() {
  if (desc_) cudnnBackendDestroyDescriptor(desc_);
}

BackendDescriptor::BackendDescriptor(BackendDescriptor&& other) noexcept
    : desc_(std::exchange(other.desc_, nullptr)), status_(other.status_), failure_(std::move(other.failure_)) {}

BackendDescriptor& BackendDescriptor::operator=(BackendDescriptor&& other) noexcept {
  if (this != &other) {
    if (desc_) cudnnBackendDestroyDescriptor(desc_);
    desc_ = std::exchange(other.desc_, nullptr);
    status_ = other.status_;
    failure_ = std::move(other.failure_);
  }
  return *this;
}

void BackendDescriptor::fail(cudnnStatus_t status, const std::string& what) {
  if (status_ != CUDNN_STATUS_SUCCESS) return;  // keep the first failure
  status_ = status;
  failure_ = what + ": " + cudnn_error_text(status);
}

BackendDescriptor& BackendDescriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                                          int64_t count, const void* values) {
  if (status_ != CUDNN_STATUS_SUCCESS || !desc_) return *this;
  const cudnnStatus_t s = cudnnBackendSetAttribute(desc_, name, type, count, values);
  if (s != CUDNN_STATUS_SUCCESS) fail(s, "cudnnBackendSetAttribute(attribute " + std::to_string(static_cast<int>(name)) + ")");
  return *this;
}

BackendDescriptor& BackendDescriptor::set(cudnnBackendAttributeName_t name, int64_t value) {
  return set(name, CUDNN_TYPE_INT64, 1, &value);
}

BackendDescriptor& BackendDescriptor::set(cudnnBackendAttributeName_t name, const std::vector<int64_t>& values) {
  return set(name, CUDNN_TYPE_INT64, static_cast<int64_t>(values.size()), values.data());
}

BackendDescriptor& BackendDescriptor::set(cudnnBackendAttributeName_t name, cudnnDataType_t value) {
  return set(name, CUDNN_TYPE_DATA_TYPE, 1, &value);
}

BackendDescriptor& BackendDescriptor::set_bool(cudnnBackendAttributeName_t name, bool value) {
  return set(name, CUDNN_TYPE_BOOLEAN, 1, &value);
}

BackendDescriptor& BackendDescriptor::set(cudnnBackendAttributeName_t name, const BackendDescriptor& value) {
  if (status_ == CUDNN_STATUS_SUCCESS && value.status_ != CUDNN_STATUS_SUCCESS) {
    status_ = value.status_;
    failure_ = value.failure_;
    return *this;
  }
  cudnnBackendDescriptor_t d = value.get();
  return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d);
}

cudnnStatus_t BackendDescriptor::finalize() {
  if (status_ != CUDNN_STATUS_SUCCESS) return status_;  // an earlier call failed (or the descriptor was never made)
  const cudnnStatus_t s = cudnnBackendFinalize(desc_);
  if (s != CUDNN_STATUS_SUCCESS) fail(s, "cudnnBackendFinalize");
  return s;
}

// ---- DeviceWorkspace ----

DeviceWorkspace::DeviceWorkspace(size_t bytes, int device) : device_(device) {
  if (bytes > 0) ptr_ = allocate(bytes, device);
}

DeviceWorkspace::~DeviceWorkspace() {
  if (ptr_) deallocate(ptr_, device_);
}

}  // namespace zt::cuda

#endif  // ZTRAIN_WITH_CUDNN
