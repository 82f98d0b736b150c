#include "framework/device.h"

#include "framework/device_backend.h"
#include "framework/error.h"

namespace zt {

bool cuda_available() { return cuda_device_count() > 0; }

int cuda_device_count() {
  DeviceBackend* cuda = find_device_backend(DeviceType::CUDA);
  return cuda ? cuda->device_count() : 0;
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    try {
      return Device::cuda(std::stoi(s.substr(5)));
    } catch (const std::exception&) {
    }
  }
  ZT_FAIL("unknown device '", s, "' (expected cpu, cuda or cuda:N)");
}

}  // namespace zt
