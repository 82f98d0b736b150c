#include "framework/cuda/tensor_kernels.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"

namespace zt::cuda {

namespace {

// Device element types with the storage layout of the host types in dtype.h.
template <class T> struct device_type { using type = T; };
template <> struct device_type<bf16> { using type = __nv_bfloat16; };

// The arithmetic type of an element: float for f32/bf16, double for the rest.
template <class T> struct math_type { using type = double; };
template <> struct math_type<float> { using type = float; };
template <> struct math_type<__nv_bfloat16> { using type = float; };

template <class To, class From>
__device__ __forceinline__ To convert_element(From v) {
  if constexpr (std::is_same_v<From, __nv_bfloat16>) return convert_element<To>(__bfloat162float(v));
  else if constexpr (std::is_same_v<To, __nv_bfloat16>) return __float2bfloat16_rn(static_cast<float>(v));
  else return static_cast<To>(v);
}

constexpr int kThreads = 256;

dim3 grid_for(int64_t n) {
  int dev = 0;
  ZT_CUDA_CHECK(cudaGetDevice(&dev));  // set_device() ran just before
  const int64_t cap = int64_t{multiprocessor_count(dev)} * 16;
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, cap))));
}

template <class T>
__global__ void fill_kernel(T* dst, int64_t n, T value) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = value;
}

template <class T>
__global__ void scale_kernel(T* data, int64_t n, double factor) {
  using M = typename math_type<T>::type;
  const M f = static_cast<M>(factor);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    data[i] = convert_element<T>(convert_element<M>(data[i]) * f);
}

template <class A, class B>
__global__ void add_scaled_kernel(A* a, const B* b, int64_t n, double alpha) {
  using M = typename math_type<A>::type;
  const M al = static_cast<M>(alpha);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    a[i] = convert_element<A>(convert_element<M>(a[i]) + al * convert_element<M>(convert_element<A>(b[i])));
}

template <class D, class S>
__global__ void convert_kernel(D* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = convert_element<D>(src[i]);
}

// Calls f(tag) with tag the device element type of dtype t.
template <class F>
void dispatch_device(DType t, F&& f) {
  dispatch(t, [&](auto tag) { f(typename device_type<decltype(tag)>::type{}); });
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
    fill_kernel<T><<<grid_for(n), kThreads, 0, current_stream()>>>(static_cast<T*>(dst), n, v);
  });
  ZT_CUDA_CHECK_LAUNCH();
}

void scale(int device, void* data, DType dtype, int64_t n, double factor) {
  if (n <= 0) return;
  set_device(device);
  dispatch_device(dtype, [&](auto tag) {
    using T = decltype(tag);
    scale_kernel<T><<<grid_for(n), kThreads, 0, current_stream()>>>(static_cast<T*>(data), n, factor);
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
      add_scaled_kernel<A, B><<<grid_for(n), kThreads, 0, current_stream()>>>(static_cast<A*>(a),
                                                                               static_cast<const B*>(b), n, alpha);
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
      convert_kernel<D, S><<<grid_for(n), kThreads, 0, current_stream()>>>(static_cast<D*>(dst),
                                                                           static_cast<const S*>(src), n);
    });
  });
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::cuda
