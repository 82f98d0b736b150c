// The choice of backend per device type: the one place in framework/ that asks whether this
// build has CUDA. The CUDA backend is reached by a direct call, not by a static registrar
// (an object file nothing refers to is dropped when the static library is linked).
#include "framework/device_backend.h"

#include "framework/error.h"

#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/cuda_backend.h"
namespace zt {
static DeviceBackend* cuda_backend_if_built() { return &cuda::backend(); }
}  // namespace zt
#else
namespace zt {
static DeviceBackend* cuda_backend_if_built() { return nullptr; }
}  // namespace zt
#endif

namespace zt {

DeviceBackend* find_device_backend(DeviceType type) {
  switch (type) {
    case DeviceType::CPU: return nullptr;
    case DeviceType::CUDA: return cuda_backend_if_built();
  }
  return nullptr;
}

DeviceBackend& device_backend(Device device) {
  DeviceBackend* backend = find_device_backend(device.type);
  if (!backend && device.is_cuda())
    ZT_FAIL("this ztrain was built without CUDA (configure with nvcc present, ZTRAIN_CUDA=ON)");
  ZT_CHECK(backend, "device ", device.str(), " has no backend (the host's code is inline in Tensor and Storage)");
  return *backend;
}

}  // namespace zt
