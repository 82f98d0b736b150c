#pragma once
// CPU kernels behind ops/embedding.h (internal to ops/).
#include "framework/tensor.h"

namespace zt::ops {

// Throws zt::Error naming the first id outside [0, vocab): its position and value.
void check_ids_cpu(const Tensor& ids, int64_t vocab);

// out [ids..., C] = weight[ids, :] for weight [V, C] (any dtype; rows are copied).
Tensor embedding_forward_cpu(const Tensor& weight, const Tensor& ids);

// The weight gradient [vocab, C]: row ids[i] accumulates grad row i (grad [ids..., C]).
Tensor embedding_backward_cpu(const Tensor& grad, const Tensor& ids, int64_t vocab, DType dtype);

// CUDA kernels (ops/embedding_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
// The forward also checks the ids, without a host sync: a bad id gets a NaN row and raises
// a deferred check that throws check_ids_cpu's error at the next host read (ops/embedding.h).
// The backward skips bad ids.
Tensor embedding_forward_cuda(const Tensor& weight, const Tensor& ids);
Tensor embedding_backward_cuda(const Tensor& grad, const Tensor& ids, int64_t vocab, DType dtype);
#endif

}  // namespace zt::ops
