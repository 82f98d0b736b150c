// CUDA kernels behind ops/reduce.h (and the row sums other ops' backward passes share).
#include "ops/cuda_compute.cuh"
#include "ops/reduce_kernels.h"

namespace zt::ops {

namespace {

using namespace gpu;

constexpr int kSumBlocks = 512;

// Stage 1: each block sums a grid-stride share into partial[block].
template <class T, class A>
__global__ void sum_partials_kernel(const T* x, int64_t n, A* partial) {
  __shared__ A scratch[32];
  A acc = 0;
  ZT_GRID_STRIDE(i, n) acc += load<A>(x, i);
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Stage 2: one block sums the partials (fixed order: deterministic).
template <class A>
__global__ void sum_finish_kernel(const A* partial, int n, A* out) {
  __shared__ A scratch[32];
  A acc = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) *out = acc;
}

template <class T, class A>
struct ReadElement {
  const T* x;
  int64_t cols;
  __device__ A operator()(int64_t r, int64_t j) const { return load<A>(x, r * cols + j); }
};

}  // namespace

Tensor sum_all_cuda(const Tensor& x_in) {
  const Tensor x = x_in.contiguous();
  const int dev = x.device().index;
  OpRange range("reduce");
  Tensor out = Tensor::empty({}, acc_dtype(x.dtype()), x.device());
  cudaStream_t s = stream_for(x);
  dispatch_device_float(x.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const int64_t n = x.numel();
    const int blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(kSumBlocks, (n + kThreads - 1) / kThreads)));
    Tensor partial = Tensor::empty({blocks}, out.dtype(), x.device());
    sum_partials_kernel<T, A><<<blocks, kThreads, 0, s>>>(static_cast<const T*>(x.raw_data()), n,
                                                          static_cast<A*>(partial.raw_data()));
    ZT_CUDA_CHECK_LAUNCH();
    sum_finish_kernel<A><<<1, kThreads, 0, s>>>(static_cast<const A*>(partial.raw_data()), blocks,
                                                static_cast<A*>(out.raw_data()));
    ZT_CUDA_CHECK_LAUNCH();
  });
  (void)dev;
  return out;
}

Tensor sum_rows_cuda(const Tensor& x_in, int64_t cols) {
  const Tensor x = x_in.contiguous();
  ZT_CHECK(cols > 0 ? x.numel() % cols == 0 : x.numel() == 0, "sum_rows_cuda: ", x.numel(),
           " elements are not rows of ", cols);
  OpRange range("reduce");
  const int64_t rows = cols > 0 ? x.numel() / cols : 0;
  Tensor out = Tensor::empty({cols}, x.dtype(), x.device());
  stream_for(x);
  dispatch_device_float(x.dtype(), "sum_rows", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    if (rows > 0 && column_sum_packed<T>(x.device().index, rows, cols, static_cast<const T*>(x.raw_data()),
                                         static_cast<T*>(out.raw_data())))
      return;
    column_sum<T, A>(x.device().index, rows, cols, static_cast<T*>(out.raw_data()), 1,
                     ReadElement<T, A>{static_cast<const T*>(x.raw_data()), cols});
  });
  return out;
}

}  // namespace zt::ops
