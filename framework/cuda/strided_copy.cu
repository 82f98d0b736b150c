#include "framework/cuda/strided_copy.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <type_traits>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/kernel_utils.cuh"
#include "framework/cuda/stream.h"

namespace zt::cuda {

namespace {

constexpr int kMaxDims = 8;

// Shape and both stride sets, innermost dimension last, passed by value to the kernel.
struct Layout {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t dst_stride[kMaxDims] = {};
  int64_t src_stride[kMaxDims] = {};
};

// A copy between equal types moves the bits (a bf16 NaN keeps its payload).
template <class To, class From>
__device__ __forceinline__ To convert_value(From v) {
  if constexpr (std::is_same_v<To, From>) return v;
  else return convert_element<To>(v);
}

template <class D, class S>
__global__ void strided_copy_kernel(D* dst, const S* src, int64_t n, Layout l) {
  ZT_GRID_STRIDE(i, n) {
    int64_t rest = i, so = 0, d_off = 0;
    for (int d = l.ndim - 1; d >= 0; --d) {
      const int64_t idx = rest % l.shape[d];
      rest /= l.shape[d];
      so += idx * l.src_stride[d];
      d_off += idx * l.dst_stride[d];
    }
    dst[d_off] = convert_value<D>(src[so]);
  }
}

}  // namespace

void strided_copy(int device, void* dst, DType dst_dtype, const std::vector<int64_t>& dst_strides, const void* src,
                  DType src_dtype, const std::vector<int64_t>& src_strides, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (n == 0) return;
  // Drop size-1 dimensions and merge neighbours that are contiguous in both views: fewer
  // divisions per element, and most copies here reduce to 2-4 dimensions.
  Layout l;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (l.ndim > 0) {
      const int k = l.ndim - 1;
      if (l.src_stride[k] == src_strides[d] * shape[d] && l.dst_stride[k] == dst_strides[d] * shape[d]) {
        l.shape[k] *= shape[d];
        l.src_stride[k] = src_strides[d];
        l.dst_stride[k] = dst_strides[d];
        continue;
      }
    }
    ZT_CHECK(l.ndim < kMaxDims, "CUDA strided copy: more than ", kMaxDims, " non-mergeable dimensions");
    l.shape[l.ndim] = shape[d];
    l.src_stride[l.ndim] = src_strides[d];
    l.dst_stride[l.ndim] = dst_strides[d];
    ++l.ndim;
  }
  if (l.ndim == 0) {  // a single element
    l.ndim = 1;
    l.shape[0] = 1;
  }
  set_device(device);
  const unsigned blocks = grid_for(n, device, 16);
  dispatch_device(dst_dtype, [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_device(src_dtype, [&](auto stag) {
      using S = decltype(stag);
      strided_copy_kernel<D, S><<<blocks, kThreads, 0, current_stream()>>>(static_cast<D*>(dst),
                                                                            static_cast<const S*>(src), n, l);
    });
  });
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::cuda
