#pragma once
// CPU kernels behind ops/matmul.h (internal to ops/).
#include "framework/tensor.h"

namespace zt::ops {

// One (batched) product: out[i] = op(a[i]) op(b[i]) for i < batch, op(a[i]) [M, K] and
// op(b[i]) [K, N]; a is stored [K, M] per batch when trans_a, b [N, K] when trans_b.
struct GemmDims {
  int64_t batch = 1, M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
};

// out := op(a) op(b), or out += op(a) op(b) when accumulate. a, b, out: host tensors of one
// floating dtype holding batch * (their matrix) elements; out contiguous.
void gemm_cpu(const Tensor& a, const Tensor& b, Tensor& out, const GemmDims& dims, bool accumulate = false);

// out [R, out_features] := residual + x [R, in] w^T + bias (bias [out_features], residual
// [R, out_features] of out's dtype, either undefined): residual and bias rows are written
// first and the product accumulated onto them, in f32 for bf16 with one rounding at the end.
void linear_forward_cpu(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out,
                        const Tensor& residual = Tensor());

// CUDA kernels (ops/matmul_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
void gemm_cuda(const Tensor& a, const Tensor& b, Tensor& out, const GemmDims& dims, bool accumulate = false);
// Same contract as linear_forward_cpu. The residual is read by the product itself (cuBLASLt's
// C input next to the bias epilogue; one rounding); returns whether it was. false: cuBLASLt
// offered no such algorithm (or f64 with a bias), so the residual and bias were written
// first and the product accumulated onto them.
bool linear_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out,
                         const Tensor& residual = Tensor());
// dw [out, in] := g^T x for g [R, out], x [R, in]; with db defined ([out], dw's dtype), db :=
// the sum of g's rows in the same cuBLASLt call (its bias-gradient epilogue). Returns whether
// db was written: false (dw still written) when db is undefined or cuBLASLt offers no such
// epilogue here (f64, some shapes): the caller then reduces g itself.
bool linear_weight_grad_cuda(const Tensor& g, const Tensor& x, Tensor& dw, Tensor& db);
// Whether the linear layer's backward asks for db through that epilogue. Default no: a plain
// dW product plus the packed column reduction (sum_rows_cuda) measured faster on an H200
// (gpt_small B=16: 34.65 vs 35.20 ms a step). ZT_DB_EPILOGUE=1 selects the epilogue.
bool db_epilogue_preferred();
// The MLP's GELU on cuBLASLt epilogues (ops/mlp.h); off when the environment sets
// ZT_MLP_EPILOGUES=0 (the MLP then runs as linear, GELU kernel, linear: A/B timing).
bool mlp_epilogues_enabled();
// Each returns false, having written
// nothing, where cuBLASLt offers no such epilogue (f64, a width not a multiple of 8, ...):
// the caller then runs the product and the GELU kernel separately.
// out, pre [R, out_features]: pre := x w^T + bias (bias may be undefined), out := gelu(pre).
bool linear_gelu_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, Tensor& pre);
// For g [R, out_features] and w [out_features, hidden]: dpre [R, hidden] := (g w) * gelu'(pre).
bool gelu_input_grad_cuda(const Tensor& g, const Tensor& w, const Tensor& pre, Tensor& dpre);
#endif

// out [R, out_features] := residual + x w^T + bias on out's device (linear_forward_cpu or
// _cuda), counting the CUDA calls whose product read the residual (residual_gemm_count()).
// Shared by the linear op and the MLP op.
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const Tensor& residual);

// The linear layer's gradients for g = d out ([..., out_features], contiguous), x [..., in]
// (x_shape) and w [out, in], on g's device; each computed only when asked for (x may be
// undefined without want_dw, w without want_dx). Shared by the linear op and the MLP op.
struct LinearGrads {
  Tensor dx, dw, db;
};
LinearGrads linear_backward(const Tensor& g, const Tensor& x, const Tensor& w, const Shape& x_shape, bool want_dx,
                            bool want_dw, bool want_db);

}  // namespace zt::ops
