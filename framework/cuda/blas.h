#pragma once
// The framework's cuBLASLt handle and workspace (one per device, created on first use), and
// the one matrix-product call every CUDA op uses. Built only with ZTRAIN_CUDA.
#include <cublasLt.h>

#include <cstdint>

#include "framework/dtype.h"

namespace zt::cuda {

// Row-major, strided-batched: for b < batch,
//   C[b] (M x N) = alpha op(A[b]) op(B[b]) + beta C[b]   (+ bias[n] on every row when bias is set)
// op(A) is A stored [M, K] (row stride lda), or A^T with A stored [K, M] when trans_a;
// op(B) is B stored [K, N], or B^T with B stored [N, K] when trans_b. Strides are in elements.
// A and B share ab_dtype; C has c_dtype (bf16 A/B may write f32 C). Accumulation is f32 for
// f32/bf16 (no TF32: f32 results stay f32-exact) and f64 for f64. beta == 0 never reads C.
// Issued on current_stream() without a host synchronisation.
struct GemmArgs {
  int64_t batch = 1, M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  const void* A = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* B = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* C = nullptr;
  int64_t ldc = 0, stride_c = 0;
  DType ab_dtype = DType::f32, c_dtype = DType::f32;
  double alpha = 1.0, beta = 0.0;
  const void* bias = nullptr;  // [N] of c_dtype; f32/bf16 only (cuBLASLt's bias epilogue)
};

// Runs the product. Returns false, having done nothing, only when a bias was asked for and
// cuBLASLt offers no algorithm with the bias epilogue for this problem (the caller then adds
// the bias itself); any other failure is a zt::Error.
bool gemm(int device, const GemmArgs& args);

cublasLtHandle_t lt_handle(int device);

}  // namespace zt::cuda
