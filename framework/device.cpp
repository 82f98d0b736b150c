#include "framework/device.h"

#include "framework/error.h"
#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/cuda_memory.h"
#endif

namespace zt {

bool cuda_available() { return cuda_device_count() > 0; }

int cuda_device_count() {
#ifdef ZTRAIN_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
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
