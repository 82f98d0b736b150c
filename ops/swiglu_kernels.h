#pragma once
// CPU kernels behind ops/swiglu.h (internal to ops/).
#include "framework/tensor.h"

namespace zt::ops {

// y[r, j] = silu(a) b with a = gate_up[r, j], b = gate_up[r, F + j], over rows of gate_up [rows, 2F].
Tensor swiglu_forward_cpu(const Tensor& gate_up);
// d gate_up [rows, 2F] given grad [rows, F]: with s = sigmoid(a),
//   da = grad b s (1 + a (1 - s)),  db = grad silu(a).
Tensor swiglu_backward_cpu(const Tensor& grad, const Tensor& gate_up);

// CUDA kernels (ops/swiglu_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
Tensor swiglu_forward_cuda(const Tensor& gate_up);
Tensor swiglu_backward_cuda(const Tensor& grad, const Tensor& gate_up);
#endif

}  // namespace zt::ops
