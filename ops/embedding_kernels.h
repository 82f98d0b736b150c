#pragma once
// CPU kernels behind ops/embedding.h (internal to ops/).
#include "framework/tensor.h"

namespace zt::ops {

// Throws zt::Error naming the first id outside [0, vocab): its position and value.
void check_ids_cpu(const Tensor& ids, int64_t vocab);

// out [ids..., C] = weight[ids - offset, :] for weight [V, C] (any dtype; rows are copied); an
// id outside the table's rows [offset, offset + V) gets a zero row (a vocab-parallel shard;
// ids are checked against the global vocabulary before).
Tensor embedding_forward_cpu(const Tensor& weight, const Tensor& ids, int64_t offset);

// The weight gradient [vocab, C]: row ids[i] - offset accumulates grad row i (grad [ids..., C]);
// ids outside [offset, offset + vocab) add nothing.
Tensor embedding_backward_cpu(const Tensor& grad, const Tensor& ids, int64_t vocab, DType dtype, int64_t offset);

// CUDA kernels (ops/embedding_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
// The forward also checks the ids, without a host sync: a bad id gets a NaN row and raises
// a deferred check that throws check_ids_cpu's error at the next host read (ops/embedding.h).
// `id_limit` is the global vocabulary the ids are checked against.
// The backward is deterministic, no atomics: it sorts the ids by row (CUB radix sort, no host
// sync) and gives each row of the gradient one writer, which sums its gradient rows in
// position order (f32 for f32/bf16, f64 for f64; a run longer than a chunk of sorted ids from
// the chunks' partial sums, in order) and writes the row once, in `dtype` when the gradient
// has it (no f32 [vocab, C] table for a bf16 table); rows no id hits are written as zeros.
// Ids outside [offset, offset + vocab), other shards' or bad ones, are skipped.
Tensor embedding_forward_cuda(const Tensor& weight, const Tensor& ids, int64_t offset, int64_t id_limit);
Tensor embedding_backward_cuda(const Tensor& grad, const Tensor& ids, int64_t vocab, DType dtype, int64_t offset);
#endif

}  // namespace zt::ops
