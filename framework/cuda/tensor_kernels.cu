#include "framework/cuda/tensor_kernels.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/kernel_utils.cuh"
#include "framework/cuda/stream.h"

namespace zt::cuda {

namespace {

dim3 grid_for(int64_t n) {
  int dev = 0;
  ZT_CUDA_CHECK(cudaGetDevice(&dev));  // set_device() ran just before
  return dim3(cuda::grid_for(n, dev, 16));
}

// Each thread moves groups of 8 consecutive elements with 16-byte accesses when every
// pointer is 16-byte aligned: one 2-byte access per thread keeps too few bytes in flight
// to reach HBM bandwidth (the gradient accumulation and cast kernels ran at about half of
// it). `groups` is n / 8 then (0 otherwise); the remaining elements go one by one.
constexpr int kGroup = 8;
template <class T>
struct alignas(16) Group {
  T v[kGroup];
};

// Grid-stride loops over the groups (ZT_GRID_STRIDE), and over the tail elements
// [groups * 8, n).
#define ZT_TAIL(i_var, groups, n)                                                                        \
  for (int64_t i_var = (groups) * kGroup + blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i_var < (n); \
       i_var += int64_t{gridDim.x} * blockDim.x)

template <class T>
__global__ void fill_kernel(T* dst, int64_t n, int64_t groups, T value) {
  ZT_GRID_STRIDE(g, groups) {
    Group<T> x;
#pragma unroll
    for (int j = 0; j < kGroup; ++j) x.v[j] = value;
    reinterpret_cast<Group<T>*>(dst)[g] = x;
  }
  ZT_TAIL(i, groups, n) dst[i] = value;
}

template <class T>
__global__ void scale_kernel(T* data, int64_t n, int64_t groups, double factor) {
  using M = acc_t<T>;
  const M f = static_cast<M>(factor);
  ZT_GRID_STRIDE(g, groups) {
    Group<T> x = reinterpret_cast<Group<T>*>(data)[g];
#pragma unroll
    for (int j = 0; j < kGroup; ++j) x.v[j] = convert_element<T>(convert_element<M>(x.v[j]) * f);
    reinterpret_cast<Group<T>*>(data)[g] = x;
  }
  ZT_TAIL(i, groups, n) data[i] = convert_element<T>(convert_element<M>(data[i]) * f);
}

template <class A, class B>
__device__ __forceinline__ A add_scaled_element(A a, B b, acc_t<A> al) {
  using M = acc_t<A>;
  return convert_element<A>(convert_element<M>(a) + al * convert_element<M>(convert_element<A>(b)));
}

template <class A, class B>
__global__ void add_scaled_kernel(A* a, const B* b, int64_t n, int64_t groups, double alpha) {
  using M = acc_t<A>;
  const M al = static_cast<M>(alpha);
  ZT_GRID_STRIDE(g, groups) {
    Group<A> x = reinterpret_cast<Group<A>*>(a)[g];
    const Group<B> y = reinterpret_cast<const Group<B>*>(b)[g];
#pragma unroll
    for (int j = 0; j < kGroup; ++j) x.v[j] = add_scaled_element(x.v[j], y.v[j], al);
    reinterpret_cast<Group<A>*>(a)[g] = x;
  }
  ZT_TAIL(i, groups, n) a[i] = add_scaled_element(a[i], b[i], al);
}

template <class D, class S>
__global__ void convert_kernel(D* dst, const S* src, int64_t n, int64_t groups) {
  ZT_GRID_STRIDE(g, groups) {
    const Group<S> x = reinterpret_cast<const Group<S>*>(src)[g];
    Group<D> y;
#pragma unroll
    for (int j = 0; j < kGroup; ++j) y.v[j] = convert_element<D>(x.v[j]);
    reinterpret_cast<Group<D>*>(dst)[g] = y;
  }
  ZT_TAIL(i, groups, n) dst[i] = convert_element<D>(src[i]);
}

// Groups for n elements when all pointers allow 16-byte accesses, else 0.
int64_t groups_for(int64_t n, std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (!aligned16(p)) return 0;
  return n / kGroup;
}

// Threads for the groups and the tail, whichever needs more.
dim3 grid_for_groups(int64_t n, int64_t groups) { return grid_for(std::max<int64_t>(groups, n - groups * kGroup)); }

// Multi-tensor widening: block b finds its tensor in the prefix table (binary search) and
// converts one chunk of 2048 elements, 16 bytes of bf16 per thread access when aligned.
constexpr int kWidenTensors = 64;  // the table stays under the 4 KB kernel-parameter limit
constexpr int64_t kWidenChunk = int64_t{kThreads} * kGroup;

using WidenTable = MultiTensorTable<WidenJob, kWidenTensors>;

__global__ void widen_many_kernel(WidenTable table) {
  const int e = table.entry_of_block();
  const WidenJob& j = table.entry[e];
  const int64_t begin = (blockIdx.x - table.first_block[e]) * kWidenChunk;
  const int64_t end = min(j.n, begin + kWidenChunk);
  const auto* src = static_cast<const __nv_bfloat16*>(j.src);
  const int64_t first = begin + threadIdx.x * int64_t{kGroup};
  if (aligned16(src) && aligned16(j.dst) && first + kGroup <= end) {
    const Group<__nv_bfloat16> x = reinterpret_cast<const Group<__nv_bfloat16>*>(src + first)[0];
    float4* d = reinterpret_cast<float4*>(j.dst + first);
    float v[kGroup];
#pragma unroll
    for (int k = 0; k < kGroup; ++k) v[k] = __bfloat162float(x.v[k]);
    float4 lo4 = make_float4(v[0], v[1], v[2], v[3]), hi4 = make_float4(v[4], v[5], v[6], v[7]);
    if (j.accumulate) {
      const float4 a = d[0], b = d[1];
      lo4 = make_float4(a.x + lo4.x, a.y + lo4.y, a.z + lo4.z, a.w + lo4.w);
      hi4 = make_float4(b.x + hi4.x, b.y + hi4.y, b.z + hi4.z, b.w + hi4.w);
    }
    d[0] = lo4;
    d[1] = hi4;
    return;
  }
  for (int64_t i = first; i < min(end, first + kGroup); ++i)
    j.dst[i] = (j.accumulate ? j.dst[i] : 0.f) + __bfloat162float(src[i]);
}

}  // namespace

void fill(int device, void* dst, DType dtype, int64_t n, double value) {
  if (n <= 0) return;
  set_device(device);
  if (value == 0.0 && !std::signbit(value)) {  // all-zero bits in every dtype
    ZT_CUDA_CHECK(cudaMemsetAsync(dst, 0, static_cast<size_t>(n) * dtype_size(dtype), current_stream()));
    return;
  }
  dispatch_device(dtype, [&](auto tag) {
    using T = decltype(tag);
    T v;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      const bf16 host(static_cast<float>(value));
      std::memcpy(&v, &host, sizeof v);
    } else {
      v = static_cast<T>(value);
    }
    const int64_t groups = groups_for(n, {dst});
    fill_kernel<T><<<grid_for_groups(n, groups), kThreads, 0, current_stream()>>>(static_cast<T*>(dst), n, groups, v);
  });
  ZT_CUDA_CHECK_LAUNCH();
}

void scale(int device, void* data, DType dtype, int64_t n, double factor) {
  if (n <= 0) return;
  set_device(device);
  dispatch_device(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int64_t groups = groups_for(n, {data});
    scale_kernel<T><<<grid_for_groups(n, groups), kThreads, 0, current_stream()>>>(static_cast<T*>(data), n, groups,
                                                                                  factor);
  });
  ZT_CUDA_CHECK_LAUNCH();
}

void add_scaled(int device, void* a, DType a_dtype, const void* b, DType b_dtype, int64_t n, double alpha) {
  if (n <= 0) return;
  set_device(device);
  dispatch_device(a_dtype, [&](auto atag) {
    using A = decltype(atag);
    dispatch_device(b_dtype, [&](auto btag) {
      using B = decltype(btag);
      const int64_t groups = groups_for(n, {a, b});
      add_scaled_kernel<A, B><<<grid_for_groups(n, groups), kThreads, 0, current_stream()>>>(
          static_cast<A*>(a), static_cast<const B*>(b), n, groups, alpha);
    });
  });
  ZT_CUDA_CHECK_LAUNCH();
}

void convert(int device, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) {
  if (n <= 0) return;
  set_device(device);
  dispatch_device(dst_dtype, [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_device(src_dtype, [&](auto stag) {
      using S = decltype(stag);
      const int64_t groups = groups_for(n, {dst, src});
      convert_kernel<D, S><<<grid_for_groups(n, groups), kThreads, 0, current_stream()>>>(
          static_cast<D*>(dst), static_cast<const S*>(src), n, groups);
    });
  });
  ZT_CUDA_CHECK_LAUNCH();
}

void widen_bf16_to_f32_many(int device, const std::vector<WidenJob>& jobs) {
  set_device(device);
  WidenTable table;
  auto launch = [&] {
    if (table.count == 0) return;
    widen_many_kernel<<<static_cast<unsigned>(table.blocks()), kThreads, 0, current_stream()>>>(table);
    ZT_CUDA_CHECK_LAUNCH();
    table = WidenTable{};
  };
  for (const WidenJob& j : jobs) {
    if (j.n <= 0) continue;
    const int64_t need = ceil_div(j.n, kWidenChunk);
    if (table.full() || table.blocks() + need > (int64_t{1} << 31) - 1) launch();
    table.add(j, need);
  }
  launch();
}

}  // namespace zt::cuda
