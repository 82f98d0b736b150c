#pragma once
// What every CUDA kernel file shares (framework/cuda, ops/, trainers/; built only with
// ZTRAIN_CUDA): the device element type of a dtype and conversions between element types, the
// type kernels accumulate in, the block size and grid sizing of grid-stride loops, 16-byte
// alignment, shared-memory addresses for PTX, log2(e), and the table a multi-tensor kernel
// takes as its parameter. Op-specific compute helpers (loads/stores, block sums, column
// reductions) are in ops/cuda_compute.cuh.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "framework/cuda/stream.h"
#include "framework/dtype.h"
#include "framework/error.h"

namespace zt::cuda {

// ---- element types ----

// The device element type with the storage layout of a host type of dtype.h: bf16 ->
// __nv_bfloat16, every other type itself.
template <class T> struct device_type { using type = T; };
template <> struct device_type<bf16> { using type = __nv_bfloat16; };

// An element converted to another element type on the device: bf16 widens exactly to float
// and is rounded to from float once, to nearest even; the rest is static_cast.
template <class To, class From>
__device__ __forceinline__ To convert_element(From v) {
  if constexpr (std::is_same_v<From, __nv_bfloat16>) return convert_element<To>(__bfloat162float(v));
  else if constexpr (std::is_same_v<To, __nv_bfloat16>) return __float2bfloat16_rn(static_cast<float>(v));
  else return static_cast<To>(v);
}

// The type kernels compute in: float for f32 and bf16 (loads widen, stores round once),
// double for f64 and for the integer dtypes (the tensor kernels' scale and add on i32/i64).
template <class T> struct acc_type { using type = double; };
template <> struct acc_type<float> { using type = float; };
template <> struct acc_type<__nv_bfloat16> { using type = float; };
template <> struct acc_type<bf16> { using type = float; };
template <class T> using acc_t = typename acc_type<T>::type;

// The dtype results of a floating dtype accumulate in: f32 for f32/bf16, f64 for f64.
inline DType acc_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// Calls f(tag) with tag the device element type of dtype t (every dtype).
template <class F>
void dispatch_device(DType t, F&& f) {
  dispatch(t, [&](auto tag) { f(typename device_type<decltype(tag)>::type{}); });
}

// Calls f(T{}) with T the device type of a floating dtype (float, __nv_bfloat16, double).
template <class F>
void dispatch_device_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::bf16: return f(__nv_bfloat16{});
    case DType::f64: return f(double{});
    default: ZT_FAIL(op, ": no CUDA kernel for dtype ", dtype_name(t));
  }
}

// ---- launch geometry ----

constexpr int kThreads = 256;  // threads per block of the grid-stride and multi-tensor kernels

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// `want` blocks, at least 1 and at most blocks_per_sm per multiprocessor of `device`:
// enough to fill the device, no more (the kernels loop over the rest).
inline unsigned capped_grid(int64_t want, int device, int blocks_per_sm) {
  const int64_t cap = int64_t{multiprocessor_count(device)} * blocks_per_sm;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(want, cap)));
}

// Blocks of kThreads for a grid-stride loop over n elements. ops/ kernels take 8 per
// multiprocessor, the framework's copy and fill kernels 16.
inline unsigned grid_for(int64_t n, int device, int blocks_per_sm) {
  return capped_grid(ceil_div(n, kThreads), device, blocks_per_sm);
}

#define ZT_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < (n); i += int64_t{gridDim.x} * blockDim.x)

// 16-byte vector accesses need 16-byte aligned pointers.
__host__ __device__ inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---- device code ----

constexpr float kLog2e = 1.4426950408889634f;  // exp(x) = exp2(x * log2(e)): one MUFU.EX2

// The shared-memory address of a generic pointer into shared memory, as PTX's .shared
// operands (cp.async, mbarrier, ldmatrix, mapa) take it.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- multi-tensor kernels ----

// A multi-tensor kernel (AdamW, the gradient norm, the engine's gradient widening) takes this
// table by value as its parameter (keep sizeof under the 4 KB kernel-parameter limit) and
// gives each block a chunk of one entry's tensor: entry i owns blocks [first_block[i],
// first_block[i + 1]), and first_block[count] is the grid size.
template <class Entry, int N>
struct MultiTensorTable {
  static constexpr int kCapacity = N;
  Entry entry[N];
  int64_t first_block[N + 1];
  int count = 0;

  bool full() const { return count == N; }
  int64_t blocks() const { return count == 0 ? 0 : first_block[count]; }  // the grid size

  // Appends an entry whose work is `entry_blocks` blocks, after the blocks already there.
  void add(const Entry& e, int64_t entry_blocks) {
    const int64_t begin = blocks();
    entry[count] = e;
    first_block[count] = begin;
    first_block[count + 1] = begin + entry_blocks;
    ++count;
  }

  // The entry whose block range holds this block: the last i with first_block[i] <=
  // blockIdx.x (binary search; empty entries share a first block with the next one and are
  // skipped).
  __device__ __forceinline__ int entry_of_block() const {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (first_block[mid] <= blockIdx.x) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
};

}  // namespace zt::cuda
