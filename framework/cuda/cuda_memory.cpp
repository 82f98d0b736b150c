#include "framework/cuda/cuda_memory.h"

#include "framework/cuda/cuda_check.h"

namespace zt::cuda {

// Plain cudaMalloc for now; the caching allocator of the CUDA-backend issue replaces this
// behind the same two calls.
void* allocate(size_t nbytes, int device) {
  ZT_CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  ZT_CUDA_CHECK(cudaMalloc(&p, nbytes == 0 ? 1 : nbytes));
  return p;
}

void deallocate(void* ptr, int device) {
  if (!ptr) return;
  cudaSetDevice(device);
  cudaFree(ptr);  // no throw from destructors
}

void copy(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  ZT_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDefault));
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

}  // namespace zt::cuda
