#pragma once
// Matrix products on Variables. CPU: Eigen (multi-threaded); CUDA: cuBLAS(Lt).
#include "framework/autograd/variable.h"

namespace zt::ops {

// a [M, K] (or [K, M] if trans_a) times b [K, N] (or [N, K] if trans_b) -> [M, N].
// Batched: a [B, M, K], b [B, K, N] -> [B, M, N]; or a [..., K] @ b [K, N] (b shared by all
// rows: the linear-layer case, flattened to one 2-D product).
Variable matmul(const Variable& a, const Variable& b, bool trans_a = false, bool trans_b = false);

// x [..., in] @ w^T + bias: w is [out, in] (PyTorch's nn.Linear layout), bias [out] or undefined.
Variable linear(const Variable& x, const Variable& w, const Variable& bias = Variable());

}  // namespace zt::ops
