#pragma once
// Helpers shared by the CPU kernels (internal to ops/): the types they compute in and the
// OpenMP patterns they repeat.
//
// Kernels compute in f32 for f32 and f64 for f64. bf16 tensors are widened to f32, computed
// in f32 and rounded back to bf16 once at the end: bf16 on the CPU serves tests and
// checkpoint tooling, not speed, so it gets no kernels of its own.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "framework/tensor.h"
#include "ops/shape_ops_kernels.h"

namespace zt::ops::cpu {

// Below this many elements a loop runs on one thread (fork/join costs more than it saves).
inline constexpr int64_t kParallelMin = 1 << 15;

// The tensor a kernel reads: contiguous, bf16 widened to f32 (no copy when already so).
inline Tensor to_compute(const Tensor& t) {
  Tensor c = contiguous_cpu(t);
  return c.dtype() == DType::bf16 ? c.to(DType::f32) : c;
}
inline DType compute_dtype(DType t) { return t == DType::bf16 ? DType::f32 : t; }

// Calls f(T{}) with T = float or double for a compute dtype (f32 or f64).
template <class F>
decltype(auto) dispatch_compute(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    default: ZT_FAIL(op, ": no CPU kernel for dtype ", dtype_name(t));
  }
}

// Sums per-row contributions into one vector of `cols` values: row_fn(r, acc) adds row r's
// contribution to acc[0, cols). Threads take contiguous row ranges into private
// accumulators, summed at the end (no atomics, deterministic for a fixed thread count).
template <class T, class RowFn>
void sum_over_rows(int64_t rows, int64_t cols, T* out, RowFn&& row_fn) {
  const int threads = rows * cols >= kParallelMin ? std::min<int64_t>(omp_get_max_threads(), rows) : 1;
  std::vector<T> partial(static_cast<size_t>(std::max(threads, 1)) * cols, T(0));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t r0 = rows * tid / nt, r1 = rows * (tid + 1) / nt;
    T* acc = partial.data() + static_cast<int64_t>(tid) * cols;
    for (int64_t r = r0; r < r1; ++r) row_fn(r, acc);
  }
  std::fill(out, out + cols, T(0));
  for (int t = 0; t < std::max(threads, 1); ++t)
    for (int64_t j = 0; j < cols; ++j) out[j] += partial[static_cast<int64_t>(t) * cols + j];
}

}  // namespace zt::ops::cpu
