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
// With addend set (beta 0): C[b] = alpha op(A[b]) op(B[b]) + addend[b] (+ bias), the sum
// rounded once (a residual add folded into the product).
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
  // Read-only matrix laid out like C (c_dtype, ldc, stride_c; must not overlap C) added to the
  // product: cuBLASLt's C input, with beta 1, while our C is its D output. Any dtype; with or
  // without bias; needs beta 0 (C is write-only then) and excludes the bias-gradient and GELU
  // epilogues.
  const void* addend = nullptr;
  // Bias-gradient epilogue: when set, the same call also writes (overwrites) bias_grad[m] =
  // sum over k of op(A)[m, k], M values of c_dtype: with op(A) = g^T this is a linear layer's
  // db next to its dW = g^T x. f32/bf16, batch 1, alpha 1 and beta 0 only; exclusive with
  // bias. (Inside, our A is cuBLASLt's B, so this is its BGRADB epilogue.)
  void* bias_grad = nullptr;
  // GELU epilogues (tanh form, as ops/gelu.h; f32/bf16, batch 1, beta 0, C's ldc a multiple
  // of 8; exclusive with bias_grad). Forward, with gelu_aux set: C = gelu(op(A) op(B) [+ bias])
  // and gelu_aux (laid out like C) gets the pre-activation (GELU_AUX[_BIAS]). Backward, with
  // dgelu_aux set (a forward's pre-activation, laid out like C; no bias): C = (op(A) op(B)) *
  // gelu'(dgelu_aux) (DGELU). cuBLASLt's DGELU_BGRAD, which would also sum C's columns, is left
  // out: on an H200 it made the gpt_small step slower (B=16: 36.2 vs 33.4 ms), like BGRADB.
  void* gelu_aux = nullptr;
  const void* dgelu_aux = nullptr;
};

// Runs the product. Returns false, having done nothing, only when an epilogue (bias,
// bias_grad or a GELU one) or an addend was asked for and cuBLASLt offers no algorithm with it
// for this problem (the caller then does that part itself); any other failure is a zt::Error.
//
// Algorithm choice, once per distinct problem (shapes, strides, types, epilogue, pointer
// alignments, whether an addend is read): cuBLASLt's heuristic proposes up to 8 algorithms;
// with tuning on, the first call outside a stream capture times each candidate (interleaved
// rounds of a few runs, the best round counts; CUDA events, one host synchronisation) and
// every later call uses the fastest. Timing writes only C, bias_grad and gelu_aux when beta
// == 0 (the real run then overwrites them; an addend is only read) and a scratch copy of C
// when beta != 0, so an accumulating product still adds once. With tuning off, the
// heuristic's first choice is used.
bool gemm(int device, const GemmArgs& args);

// Tuning switch for calls from now on: on unless the environment sets ZT_GEMM_TUNE=0 (ZT_GEMM_TUNE=1
// is on; other values are a zt::Error at the first product). Process-wide.
void set_gemm_tuning(bool on);
bool gemm_tuning();

// What the most recent gemm() on this thread ran: its plan's candidate count, the index of
// the algorithm used (0 = the heuristic's first choice), and whether the plan's choice is
// settled (timed, or a single candidate). Counters over the process: plans made, and plans
// whose candidates were timed (for tools and tests).
struct GemmChoice {
  int candidates = 0;
  int chosen = 0;
  bool tuned = false;
};
GemmChoice last_gemm_choice();
struct GemmPlanStats {
  int64_t plans = 0, tuned = 0;
};
GemmPlanStats gemm_plan_stats();

cublasLtHandle_t lt_handle(int device);

}  // namespace zt::cuda
