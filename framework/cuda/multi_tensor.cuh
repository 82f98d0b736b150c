#pragma once
// Multi-tensor kernels (AdamW, the engine's gradient widening) give each block a chunk of one
// tensor of a table passed as a kernel parameter: first_block[i] is tensor i's first block,
// first_block[count] the grid size. Built only with ZTRAIN_CUDA.
#include <cstdint>

namespace zt::cuda {

// The tensor whose block range holds this block: the last i with first_block[i] <= blockIdx.x
// (binary search; empty tensors share a first block with the next one and are skipped).
__device__ __forceinline__ int table_entry_of_block(const int64_t* first_block, int count) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first_block[mid] <= blockIdx.x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

}  // namespace zt::cuda
