#pragma once
// CUDA side of Storage: device allocation and copies. Built only with ZTRAIN_CUDA; the
// CPU-only build never includes this header.
#include <cstddef>

namespace zt::cuda {

void* allocate(size_t nbytes, int device);
void deallocate(void* ptr, int device);
// Synchronous copy; kind inferred from the two pointers (unified addressing).
void copy(void* dst, const void* src, size_t nbytes);
int device_count();

}  // namespace zt::cuda
