#include <cstring>

#include "ops/cpu_compute.h"
#include "ops/embedding_kernels.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

// Calls f(const I* ids) with I = int32_t or int64_t.
template <class F>
void with_ids(const Tensor& ids, F&& f) {
  if (ids.dtype() == DType::i32) f(ids.data<int32_t>());
  else f(ids.data<int64_t>());
}

}  // namespace

void check_ids_cpu(const Tensor& ids_in, int64_t vocab) {
  const Tensor ids = contiguous_cpu(ids_in);
  with_ids(ids, [&](const auto* p) {
    const int64_t n = ids.numel();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = static_cast<int64_t>(p[i]);
      ZT_CHECK(id >= 0 && id < vocab, "embedding: id ", id, " at position ", index_str(i, ids.shape()), " of ids ",
               shape_str(ids.shape()), " is outside [0, ", vocab, ")");
    }
  });
}

Tensor embedding_forward_cpu(const Tensor& weight_in, const Tensor& ids_in, int64_t offset) {
  const Tensor weight = contiguous_cpu(weight_in), ids = contiguous_cpu(ids_in);
  const int64_t rows = weight.shape()[0], C = weight.shape()[1];
  Shape out_shape = ids.shape();
  out_shape.push_back(C);
  Tensor out = Tensor::empty(out_shape, weight.dtype());
  const size_t row_bytes = static_cast<size_t>(C) * dtype_size(weight.dtype());
  const char* w = static_cast<const char*>(weight.raw_data());
  char* o = static_cast<char*>(out.raw_data());
  with_ids(ids, [&](const auto* p) {
    const int64_t n = ids.numel();
#pragma omp parallel for schedule(static) if (out.numel() >= cpu::kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = static_cast<int64_t>(p[i]) - offset;
      if (row >= 0 && row < rows) std::memcpy(o + i * row_bytes, w + row * row_bytes, row_bytes);
      else std::memset(o + i * row_bytes, 0, row_bytes);
    }
  });
  return out;
}

Tensor embedding_backward_cpu(const Tensor& grad_in, const Tensor& ids_in, int64_t vocab, DType dtype, int64_t offset) {
  const Tensor grad = cpu::to_compute(grad_in), ids = contiguous_cpu(ids_in);
  const int64_t C = grad.shape().back(), n = ids.numel();
  // Zeroed by all threads: for a GPT vocabulary this buffer is ~150 MB of fresh pages.
  Tensor dw = Tensor::empty({vocab, C}, grad.dtype());
  {
    char* bytes = static_cast<char*>(dw.raw_data());
    const int64_t total = static_cast<int64_t>(dw.nbytes()), chunk = int64_t(1) << 20;
#pragma omp parallel for schedule(static) if (total >= 4 * chunk)
    for (int64_t off = 0; off < total; off += chunk) std::memset(bytes + off, 0, std::min(chunk, total - off));
  }
  cpu::dispatch_compute(grad.dtype(), "embedding", [&](auto tag) {
    using T = decltype(tag);
    const T* g = grad.data<T>();
    T* d = dw.data<T>();
    with_ids(ids, [&](const auto* p) {
      // Scatter-add without atomics: thread t owns the vocabulary rows with id % threads == t
      // and scans all ids for its own (scanning ids is cheap next to adding rows).
#pragma omp parallel if (n * C >= cpu::kParallelMin)
      {
        const int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
        for (int64_t i = 0; i < n; ++i) {
          const int64_t id = static_cast<int64_t>(p[i]) - offset;
          if (id < 0 || id >= vocab || id % nt != tid) continue;
          T* row = d + id * C;
          const T* gr = g + i * C;
          for (int64_t j = 0; j < C; ++j) row[j] += gr[j];
        }
      }
    });
  });
  return dw.to(dtype);
}

}  // namespace zt::ops
