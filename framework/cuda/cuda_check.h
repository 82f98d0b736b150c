#pragma once
// Turns CUDA runtime errors into zt::Error with the call, file and line.
#include <cuda_runtime.h>

#include "framework/error.h"

#define ZT_CUDA_CHECK(expr)                                                              \
  do {                                                                                   \
    cudaError_t zt_err_ = (expr);                                                        \
    if (zt_err_ != cudaSuccess)                                                          \
      ZT_FAIL("CUDA error ", cudaGetErrorName(zt_err_), " (", cudaGetErrorString(zt_err_), \
              ") in ", #expr, " at ", __FILE__, ":", __LINE__);                          \
  } while (0)

// After a kernel launch: catches bad launch configurations at the launch site.
#define ZT_CUDA_CHECK_LAUNCH() ZT_CUDA_CHECK(cudaGetLastError())
