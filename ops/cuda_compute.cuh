#pragma once
// Helpers shared by the CUDA kernels of ops/ (internal; included by ops/*_cuda.cu only): loads
// and stores in the compute type, warp/block sums, 16-byte packs for elementwise maps, and the
// deterministic column reduction that bias, LayerNorm, RMSNorm, QK-norm and broadcast gradients
// use. What every kernel file shares (device types, acc_t, grid sizing, log2(e), shared-memory
// addresses) is in framework/cuda/kernel_utils.cuh, brought in here under the names ops/ uses.
//
// Kernels compute in f32 for f32 and bf16 (loads widen, stores round once to nearest even)
// and in f64 for f64, like the CPU kernels (cpu_compute.h).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/kernel_utils.cuh"
#include "framework/cuda/op_profiler.h"
#include "framework/cuda/stream.h"
#include "framework/tensor.h"

namespace zt::ops::gpu {

using cuda::OpRange;

using cuda::acc_dtype;
using cuda::acc_t;
using cuda::aligned16;
using cuda::device_type;
using cuda::dispatch_device_float;
using cuda::kLog2e;
using cuda::kThreads;
using cuda::smem_addr;

template <class A, class T>
__device__ __forceinline__ A load(const T* p, int64_t i) {
  return cuda::convert_element<A>(p[i]);
}

template <class T, class A>
__device__ __forceinline__ void store(T* p, int64_t i, A v) {
  p[i] = cuda::convert_element<T>(v);
}

// Blocks for a grid-stride loop over n elements: enough to fill the device (8 per
// multiprocessor), no more.
inline unsigned grid_for(int64_t n, int device) { return cuda::grid_for(n, device, 8); }

inline cudaStream_t stream_for(const Tensor& t) {
  cuda::set_device(t.device().index);
  return cuda::current_stream();
}

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class A>
__device__ __forceinline__ A warp_max(A v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` holds 32 values; the call ends with the block synchronised.
template <class A>
__device__ A block_sum(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  A t = lane < warps ? scratch[lane] : A(0);
  return warp_sum(t);
}

template <class A>
__device__ A block_max(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  A t = lane < warps ? scratch[lane] : A(-INFINITY);
  return warp_max(t);
}

// ---- 16-byte packs for memory-bound elementwise kernels ----
// One scalar access per thread keeps too few bytes in flight to reach HBM bandwidth (2-byte
// bf16 loads with a full grid ran at ~0.9 TB/s on an H200); 16 bytes per access (8 bf16,
// 4 f32, 2 f64) does. The map kernels take `packs` = n / kN when every pointer is 16-byte
// aligned (else 0) and finish the remaining elements one by one.
template <class T>
struct alignas(16) Pack {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

template <class T>
__device__ __forceinline__ Pack<T> load_pack(const T* p, int64_t pack) {
  return reinterpret_cast<const Pack<T>*>(p)[pack];
}
template <class T>
__device__ __forceinline__ void store_pack(T* p, int64_t pack, const Pack<T>& v) {
  reinterpret_cast<Pack<T>*>(p)[pack] = v;
}

// out[i] = f(a[i]) in the accumulation type; f a device functor.
template <class T, class F>
__global__ void map1_kernel(const T* a, T* out, int64_t n, int64_t packs, F f) {
  using A = acc_t<T>;
  constexpr int N = Pack<T>::kN;
  ZT_GRID_STRIDE(p, packs) {
    const Pack<T> x = load_pack(a, p);
    Pack<T> y;
#pragma unroll
    for (int j = 0; j < N; ++j) store(y.v, j, f(load<A>(x.v, j)));
    store_pack(out, p, y);
  }
  ZT_GRID_STRIDE(i, n - packs * N) store(out, packs * N + i, f(load<A>(a, packs * N + i)));
}

// out[i] = f(a[i], b[i]).
template <class T, class F>
__global__ void map2_kernel(const T* a, const T* b, T* out, int64_t n, int64_t packs, F f) {
  using A = acc_t<T>;
  constexpr int N = Pack<T>::kN;
  ZT_GRID_STRIDE(p, packs) {
    const Pack<T> x = load_pack(a, p), z = load_pack(b, p);
    Pack<T> y;
#pragma unroll
    for (int j = 0; j < N; ++j) store(y.v, j, f(load<A>(x.v, j), load<A>(z.v, j)));
    store_pack(out, p, y);
  }
  ZT_GRID_STRIDE(i, n - packs * N) {
    const int64_t k = packs * N + i;
    store(out, k, f(load<A>(a, k), load<A>(b, k)));
  }
}

template <class T, class F>
void launch_map1(const T* a, T* out, int64_t n, int device, cudaStream_t s, F f) {
  const int64_t packs = aligned16(a) && aligned16(out) ? n / Pack<T>::kN : 0;
  map1_kernel<T, F><<<grid_for(std::max<int64_t>(packs, n - packs * Pack<T>::kN), device), kThreads, 0, s>>>(
      a, out, n, packs, f);
  ZT_CUDA_CHECK_LAUNCH();
}

template <class T, class F>
void launch_map2(const T* a, const T* b, T* out, int64_t n, int device, cudaStream_t s, F f) {
  const int64_t packs = aligned16(a) && aligned16(b) && aligned16(out) ? n / Pack<T>::kN : 0;
  map2_kernel<T, F><<<grid_for(std::max<int64_t>(packs, n - packs * Pack<T>::kN), device), kThreads, 0, s>>>(
      a, b, out, n, packs, f);
  ZT_CUDA_CHECK_LAUNCH();
}

// ---- column reduction: out[j] = sum over r < rows of f(r, j), for j < cols ----
// Stage 1: a grid of (column tiles of 32) x (row slabs); each 32 x 8 block sums its slab for
// 32 columns and writes one partial per column and slab. Stage 2 sums the slabs in order.
// No atomics: the result is the same on every run.
constexpr int kColTile = 32, kRowThreads = 8;

template <class A, class F>
__global__ void column_partials_kernel(int64_t rows, int64_t cols, int64_t rows_per_slab, A* partial, F f) {
  __shared__ A tile[kRowThreads][kColTile + 1];
  const int64_t j = blockIdx.x * int64_t{kColTile} + threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per_slab, r1 = min(rows, r0 + rows_per_slab);
  A acc = 0;
  if (j < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowThreads) acc += f(r, j);
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    A s = 0;
    for (int k = 0; k < kRowThreads; ++k) s += tile[k][threadIdx.x];
    partial[blockIdx.y * cols + j] = s;
  }
}

// Stage 2: out[j] = sum over the slabs of partial[k, j]. Eight threads per column each sum
// every eighth slab, then their sums are added in a fixed order (deterministic); one thread
// per column over a few hundred slabs would be latency-bound.
template <class T, class A>
__global__ void column_finish_kernel(const A* partial, int64_t slabs, int64_t cols, T* out, int64_t out_stride) {
  __shared__ A tile[kRowThreads][kColTile + 1];
  const int64_t j = blockIdx.x * int64_t{kColTile} + threadIdx.x;
  A acc = 0;
  if (j < cols)
    for (int64_t k = threadIdx.y; k < slabs; k += kRowThreads) acc += partial[k * cols + j];
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    A sum = 0;
    for (int k = 0; k < kRowThreads; ++k) sum += tile[k][threadIdx.x];
    store(out, j * out_stride, sum);
  }
}

// Stage 1 for a contiguous [rows, cols] f32/bf16 matrix read in 16-byte packs (cols a
// multiple of the pack, x 16-byte aligned): thread (x, y) of block (tile, slab) sums pack
// column tile * 32 + x over the slab's rows y, y + 8, ...; the block adds its 8 row groups
// in a fixed order and writes one partial per column.
template <class T>
__global__ void column_partials_packed_kernel(const T* x, int64_t rows, int64_t cols, int64_t rows_per_slab,
                                              float* partial) {
  constexpr int N = Pack<T>::kN;
  __shared__ float tile[kRowThreads][kColTile * N + 1];
  const int64_t packs = cols / N;
  const int64_t p = blockIdx.x * int64_t{kColTile} + threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per_slab, r1 = min(rows, r0 + rows_per_slab);
  float acc[N];
#pragma unroll
  for (int j = 0; j < N; ++j) acc[j] = 0.f;
  if (p < packs)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowThreads) {
      const Pack<T> v = load_pack(x + r * cols, p);
#pragma unroll
      for (int j = 0; j < N; ++j) acc[j] += load<float>(v.v, j);
    }
#pragma unroll
  for (int j = 0; j < N; ++j) tile[threadIdx.y][threadIdx.x * N + j] = acc[j];
  __syncthreads();
  for (int c = threadIdx.y * kColTile + threadIdx.x; c < kColTile * N; c += kColTile * kRowThreads) {
    const int64_t col = blockIdx.x * int64_t{kColTile} * N + c;
    if (col >= cols) continue;
    float sum = 0.f;
    for (int k = 0; k < kRowThreads; ++k) sum += tile[k][c];
    partial[blockIdx.y * cols + col] = sum;
  }
}

// Slabs of rows for a column reduction over `tiles` column tiles: enough blocks to give every
// multiprocessor a few, each slab at least 64 rows.
inline int64_t column_slabs(int device, int64_t rows, int64_t tiles) {
  const int64_t want = std::max<int64_t>(1, int64_t{cuda::multiprocessor_count(device)} * 4 / tiles);
  return std::max<int64_t>(1, std::min<int64_t>(want, (rows + 63) / 64));
}

// out[j] = sum over rows of x[r, j] for a contiguous [rows, cols] matrix, through the packed
// stage 1 when the dtype (f32, bf16), cols and alignment allow it. Returns false otherwise.
template <class T>
bool column_sum_packed(int device, int64_t rows, int64_t cols, const T* x, T* out) {
  constexpr int N = Pack<T>::kN;
  if constexpr (std::is_same_v<T, double>) {
    return false;
  } else {
    if (cols == 0 || cols % N != 0 || !aligned16(x)) return false;
    cudaStream_t s = cuda::current_stream();
    const int64_t tiles = (cols / N + kColTile - 1) / kColTile;
    const int64_t slabs = column_slabs(device, rows, tiles);
    const int64_t rows_per_slab = std::max<int64_t>(1, (rows + slabs - 1) / slabs);
    Tensor partial = Tensor::empty({slabs, cols}, DType::f32, Device::cuda(device));
    float* pp = static_cast<float*>(partial.raw_data());
    column_partials_packed_kernel<T><<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(slabs)),
                                       dim3(kColTile, kRowThreads), 0, s>>>(x, rows, cols, rows_per_slab, pp);
    ZT_CUDA_CHECK_LAUNCH();
    column_finish_kernel<T, float><<<static_cast<unsigned>((cols + kColTile - 1) / kColTile),
                                     dim3(kColTile, kRowThreads), 0, s>>>(pp, slabs, cols, out, 1);
    ZT_CUDA_CHECK_LAUNCH();
    return true;
  }
}

// Writes out[j * out_stride] (type T) = sum_r f(r, j). `device` is the tensors' device.
template <class T, class A, class F>
void column_sum(int device, int64_t rows, int64_t cols, T* out, int64_t out_stride, F f) {
  if (cols == 0) return;
  cudaStream_t s = cuda::current_stream();
  const int64_t col_tiles = (cols + kColTile - 1) / kColTile;
  const int64_t slabs = column_slabs(device, rows, col_tiles);
  const int64_t rows_per_slab = std::max<int64_t>(1, (rows + slabs - 1) / slabs);
  Tensor partial = Tensor::empty({slabs, cols}, std::is_same_v<A, double> ? DType::f64 : DType::f32,
                                 Device::cuda(device));
  A* pp = static_cast<A*>(partial.raw_data());
  column_partials_kernel<A><<<dim3(static_cast<unsigned>(col_tiles), static_cast<unsigned>(slabs)),
                              dim3(kColTile, kRowThreads), 0, s>>>(rows, cols, rows_per_slab, pp, f);
  ZT_CUDA_CHECK_LAUNCH();
  column_finish_kernel<T, A><<<static_cast<unsigned>(col_tiles), dim3(kColTile, kRowThreads), 0, s>>>(pp, slabs, cols,
                                                                                                   out, out_stride);
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::ops::gpu
