// CUDA kernels behind ops/elementwise.h.
#include "ops/cuda_compute.cuh"
#include "ops/elementwise_kernels.h"

namespace zt::ops {

namespace {

using namespace gpu;

template <class A, BinaryOp Op>
struct BinaryFn {
  __device__ A operator()(A x, A y) const {
    if constexpr (Op == BinaryOp::add) return x + y;
    else if constexpr (Op == BinaryOp::sub) return x - y;
    else return x * y;
  }
};

// out[i] = a[i] (op) b[i % cols]: the row-broadcast case (same shapes take the packed map).
template <class T, BinaryOp Op>
__global__ void binary_kernel(const T* a, const T* b, T* out, int64_t n, int64_t cols) {
  using A = acc_t<T>;
  ZT_GRID_STRIDE(i, n) store(out, i, BinaryFn<A, Op>{}(load<A>(a, i), load<A>(b, i % cols)));
}

template <class T>
__global__ void scale_kernel(const T* a, T* out, int64_t n, acc_t<T> factor) {
  ZT_GRID_STRIDE(i, n) store(out, i, load<acc_t<T>>(a, i) * factor);
}

template <class T, class A>
struct ProductElement {
  const T *x, *y;
  int64_t cols;
  __device__ A operator()(int64_t r, int64_t j) const { return load<A>(x, r * cols + j) * load<A>(y, r * cols + j); }
};

}  // namespace

Tensor binary_cuda(BinaryOp op, const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = a_in.contiguous(), b = b_in.contiguous();
  OpRange range("elementwise");
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  const int64_t n = a.numel(), cols = b.numel();
  if (n == 0) return out;
  cudaStream_t s = stream_for(a);
  const unsigned grid = grid_for(n, a.device().index);
  dispatch_device_float(a.dtype(), "elementwise", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    const int dev = a.device().index;
    if (cols == n) {  // same shapes: the packed map
      switch (op) {
        case BinaryOp::add: return launch_map2(pa, pb, po, n, dev, s, BinaryFn<acc_t<T>, BinaryOp::add>{});
        case BinaryOp::sub: return launch_map2(pa, pb, po, n, dev, s, BinaryFn<acc_t<T>, BinaryOp::sub>{});
        case BinaryOp::mul: return launch_map2(pa, pb, po, n, dev, s, BinaryFn<acc_t<T>, BinaryOp::mul>{});
      }
    }
    switch (op) {
      case BinaryOp::add: binary_kernel<T, BinaryOp::add><<<grid, kThreads, 0, s>>>(pa, pb, po, n, cols); break;
      case BinaryOp::sub: binary_kernel<T, BinaryOp::sub><<<grid, kThreads, 0, s>>>(pa, pb, po, n, cols); break;
      case BinaryOp::mul: binary_kernel<T, BinaryOp::mul><<<grid, kThreads, 0, s>>>(pa, pb, po, n, cols); break;
    }
  });
  ZT_CUDA_CHECK_LAUNCH();
  return out;
}

Tensor scale_cuda(const Tensor& a_in, double factor) {
  const Tensor a = a_in.contiguous();
  OpRange range("elementwise");
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  const int64_t n = a.numel();
  if (n == 0) return out;
  cudaStream_t s = stream_for(a);
  dispatch_device_float(a.dtype(), "scale", [&](auto tag) {
    using T = decltype(tag);
    scale_kernel<T><<<grid_for(n, a.device().index), kThreads, 0, s>>>(
        static_cast<const T*>(a.raw_data()), static_cast<T*>(out.raw_data()), n, static_cast<acc_t<T>>(factor));
  });
  ZT_CUDA_CHECK_LAUNCH();
  return out;
}

Tensor mul_sum_rows_cuda(const Tensor& x_in, const Tensor& y_in, int64_t cols) {
  const Tensor x = x_in.contiguous(), y = y_in.contiguous();
  OpRange range("elementwise");
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  Tensor out = Tensor::empty({cols}, x.dtype(), x.device());
  stream_for(x);
  dispatch_device_float(x.dtype(), "mul", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    column_sum<T, A>(x.device().index, rows, cols, static_cast<T*>(out.raw_data()), 1,
                     ProductElement<T, A>{static_cast<const T*>(x.raw_data()), static_cast<const T*>(y.raw_data()), cols});
  });
  return out;
}

}  // namespace zt::ops
