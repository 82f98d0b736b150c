#pragma once
// Matrix products on Variables. CPU: Eigen (multi-threaded); CUDA: cuBLAS(Lt).
#include "framework/autograd/variable.h"

namespace zt::ops {

// a [M, K] (or [K, M] if trans_a) times b [K, N] (or [N, K] if trans_b) -> [M, N].
// Batched: a [B, M, K], b [B, K, N] -> [B, M, N]; or a [..., K] @ b [K, N] (b shared by all
// rows: the linear-layer case, flattened to one 2-D product).
Variable matmul(const Variable& a, const Variable& b, bool trans_a = false, bool trans_b = false);

// x [..., in] @ w^T + bias: w is [out, in] (PyTorch's nn.Linear layout), bias [out] or undefined.
// With residual ([..., out], x's dtype and device): residual + x @ w^T + bias, the residual
// connection's add folded into the product (on CUDA cuBLASLt reads the residual as its C
// input, so no separate add kernel runs and the sum is rounded once; on the CPU it is
// accumulated with the bias before the one rounding). The residual's gradient is the output's.
Variable linear(const Variable& x, const Variable& w, const Variable& bias = Variable(),
                const Variable& residual = Variable());

// How many linear forwards on CUDA (ops::linear and ops::mlp's output product) had the
// product read their residual; a residual they added afterwards is not counted (tests, tools).
int64_t residual_gemm_count();

}  // namespace zt::ops
