#pragma once
// The CUDA DeviceBackend (framework/device_backend.h): Tensor's and Storage's device work
// forwarded to the CUDA functions of this folder (cuda_memory.h, tensor_kernels.h,
// strided_copy.h, deferred_check.h). Built only with ZTRAIN_CUDA.
#include "framework/device_backend.h"

namespace zt::cuda {

DeviceBackend& backend();

}  // namespace zt::cuda
