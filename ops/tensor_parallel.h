#pragma once
// The communication steps of tensor parallelism as autograd ops (Megatron-LM's
// tensor_parallel/mappings.py), usable by any model. Each is the identity on a group of one
// rank (no node, no copy), so a model written with them runs unchanged on one rank.
//
//   op                          forward                      backward
//   copy_to_tensor_parallel     identity                     all-reduce (sum) of the gradient
//   reduce_from_tensor_parallel all-reduce (sum)             identity
//   gather_from_tensor_parallel all-gather along the columns keep this rank's columns
//
// copy_to goes where a replicated activation enters a column-parallel layer (each rank's
// partial gradient of the activation must be summed); reduce_from where a row-parallel
// layer's partial outputs are summed. Collectives run on the group's device (Gloo on CPU,
// NCCL on CUDA); bf16 is carried in f32 on Gloo, which has no bf16 reduction.
#include <memory>

#include "framework/autograd/variable.h"

namespace zt {
class ProcessGroup;
}

namespace zt::ops {

Variable copy_to_tensor_parallel(const Variable& x, const std::shared_ptr<ProcessGroup>& group);
Variable reduce_from_tensor_parallel(const Variable& x, const std::shared_ptr<ProcessGroup>& group);
// x [rows, c] on every rank -> [rows, size * c], rank r's columns at [r c, (r+1) c).
Variable gather_from_tensor_parallel(const Variable& x, const std::shared_ptr<ProcessGroup>& group);

// Sum of `t` over the group, in place (t contiguous); bf16 goes through f32 on Gloo.
void all_reduce_sum(Tensor& t, ProcessGroup& group);

}  // namespace zt::ops
