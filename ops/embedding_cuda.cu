// CUDA kernels behind ops/embedding.h: a row gather forward, an atomic scatter-add backward
// (f32 accumulation for bf16 tables; the order of the additions varies between runs).
// The gather validates the ids itself and reports a bad one through a deferred check
// (framework/cuda/deferred_check.h): no host synchronisation per lookup.
#include <cstring>

#include "framework/cuda/deferred_check.h"
#include "ops/cuda_compute.cuh"
#include "ops/embedding_kernels.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

using namespace gpu;

template <class W>
__device__ __forceinline__ W all_bits_set() {
  W w;
  memset(&w, 0xff, sizeof(W));
  return w;
}

// Copies rows of `words` machine words (W = 2, 4, 8 or 16 bytes): one block per id. An id
// outside [0, id_limit) raises *bad_id and gets a row of all-ones bits, a NaN in every float
// dtype, so a result used before the check runs is visibly wrong, never another row. A valid
// id outside this table's rows [offset, offset + rows) (another vocab-parallel shard's) gets
// a zero row.
template <class W, class I>
__global__ void gather_rows_kernel(const W* weight, const I* ids, W* out, int64_t words, int64_t offset, int64_t rows,
                                   int64_t id_limit, int* bad_id) {
  const int64_t id = static_cast<int64_t>(ids[blockIdx.x]);
  W* dst = out + blockIdx.x * words;
  if (id < 0 || id >= id_limit) {
    if (threadIdx.x == 0) *bad_id = 1;
    for (int64_t j = threadIdx.x; j < words; j += blockDim.x) dst[j] = all_bits_set<W>();
    return;
  }
  const int64_t row = id - offset;
  if (row < 0 || row >= rows) {
    for (int64_t j = threadIdx.x; j < words; j += blockDim.x) dst[j] = W{};
    return;
  }
  const W* src = weight + row * words;
  for (int64_t j = threadIdx.x; j < words; j += blockDim.x) dst[j] = src[j];
}

// Rows of bad ids are skipped (the forward's check reports them): never a write outside dw.
template <class T, class A, class I>
__global__ void scatter_add_kernel(const T* grad, const I* ids, A* dw, int64_t C, int64_t vocab, int64_t offset) {
  const int64_t id = static_cast<int64_t>(ids[blockIdx.x]) - offset;
  if (id < 0 || id >= vocab) return;
  const T* g = grad + blockIdx.x * C;
  A* row = dw + id * C;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) atomicAdd(row + j, load<A>(g, j));
}

template <class F>
void with_ids(const Tensor& ids, F&& f) {
  if (ids.dtype() == DType::i32) f(static_cast<const int32_t*>(ids.raw_data()));
  else f(static_cast<const int64_t*>(ids.raw_data()));
}

}  // namespace

Tensor embedding_forward_cuda(const Tensor& weight_in, const Tensor& ids_in, int64_t offset, int64_t id_limit) {
  const Tensor weight = weight_in.contiguous(), ids = ids_in.contiguous();
  OpRange range("embedding");
  const int64_t vocab = weight.shape()[0], C = weight.shape()[1], n = ids.numel();
  Shape out_shape = ids.shape();
  out_shape.push_back(C);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  if (n == 0) return out;
  ZT_CHECK(n < (int64_t{1} << 31), "embedding: too many ids for the CUDA kernel: ", n);
  cudaStream_t s = stream_for(weight);
  cuda::DeferredCheck check;
  const int64_t row_bytes = C * static_cast<int64_t>(dtype_size(weight.dtype()));
  auto aligned = [&](int64_t w) {
    return row_bytes % w == 0 && reinterpret_cast<uintptr_t>(weight.raw_data()) % w == 0 &&
           reinterpret_cast<uintptr_t>(out.raw_data()) % w == 0;
  };
  auto launch = [&](auto word) {
    using W = decltype(word);
    const int64_t words = row_bytes / static_cast<int64_t>(sizeof(W));
    const int threads = static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(32, (words + 31) / 32 * 32)));
    with_ids(ids, [&](const auto* p) {
      gather_rows_kernel<W><<<static_cast<unsigned>(n), threads, 0, s>>>(
          static_cast<const W*>(weight.raw_data()), p, static_cast<W*>(out.raw_data()), words, offset, vocab,
          id_limit, check.device_flag());
    });
  };
  if (aligned(16)) launch(uint4{});
  else if (aligned(8)) launch(uint64_t{});
  else if (aligned(4)) launch(uint32_t{});
  else launch(uint16_t{});
  ZT_CUDA_CHECK_LAUNCH();
  // Runs at the next host read after the kernel finished; re-checks the ids on the host to
  // throw check_ids_cpu's message (position and value).
  check.commit([ids, id_limit] {
    check_ids_cpu(ids.to(Device::cpu()), id_limit);
    ZT_FAIL("embedding: an id outside [0, ", id_limit, ") of ids ", shape_str(ids.shape()),
            " (the device saw it; the ids have changed since)");
  });
  return out;
}

Tensor embedding_backward_cuda(const Tensor& grad_in, const Tensor& ids_in, int64_t vocab, DType dtype, int64_t offset) {
  const Tensor grad = grad_in.contiguous(), ids = ids_in.contiguous();
  OpRange range("embedding");
  const int64_t C = grad.shape().back(), n = ids.numel();
  const DType acc = acc_dtype(grad.dtype());
  Tensor dw = Tensor::zeros({vocab, C}, acc, grad.device());
  if (n > 0 && C > 0) {
    cudaStream_t s = stream_for(grad);
    const int threads = static_cast<int>(std::min<int64_t>(256, (C + 31) / 32 * 32));
    dispatch_device_float(grad.dtype(), "embedding", [&](auto tag) {
      using T = decltype(tag);
      using A = acc_t<T>;
      with_ids(ids, [&](const auto* p) {
        scatter_add_kernel<T, A><<<static_cast<unsigned>(n), threads, 0, s>>>(
            static_cast<const T*>(grad.raw_data()), p, static_cast<A*>(dw.raw_data()), C, vocab, offset);
      });
    });
    ZT_CUDA_CHECK_LAUNCH();
  }
  return dw.to(dtype);
}

}  // namespace zt::ops
