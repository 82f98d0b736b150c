#pragma once
// Global-norm gradient clipping: the L2 norm over every parameter's gradient together,
// and a uniform rescale when it exceeds the threshold (GPT-2/llm.c style).
#include <memory>
#include <utility>
#include <vector>

#include "models/parameter_registry.h"
#include "trainers/adamw.h"
#include "trainers/parameter_buckets.h"

namespace zt {

class ProcessGroup;

// sqrt(sum of squares of all gradients), accumulated in f64 in a fixed order (deterministic).
// NaN or inf when any gradient element is. Under tensor parallelism (`tp_group` of more than
// one rank) the norm of the whole model's gradient, the same on every rank: the squares of
// sharded parameters summed over the group, replicated parameters counted once. (Data-parallel
// ranks hold identical gradients after the all-reduce: nothing to add over them.)
double global_grad_norm(const std::vector<Parameter>& params, const std::shared_ptr<ProcessGroup>& tp_group = nullptr);

// The same norm under ZeRO, where each data-parallel rank holds the reduced gradient of its
// shard only (`gradient` of each piece of `layout`): the squares summed over `dp_group`, then
// as above over `tp_group`. The same value on every rank.
double sharded_grad_norm(const std::vector<Parameter>& params, const ParameterBuckets& layout,
                         const PieceGradient& gradient, const std::shared_ptr<ProcessGroup>& dp_group,
                         const std::shared_ptr<ProcessGroup>& tp_group);

// The same norm per parameter group (Parameter::group) over the same gradients (`gradient` of
// each piece of `layout`; under ZeRO this rank's shard, summed over `dp_group`), shards summed
// over `tp_group` as above, for the groups the model has, in kParamGroups order: the
// grad_norm/<group> signals of a log step. A pass of its own (a host read per group and kind),
// so the clipping norm stays one reduction.
std::vector<std::pair<ParamGroup, double>> group_grad_norms(const std::vector<Parameter>& params,
                                                            const ParameterBuckets& layout,
                                                            const PieceGradient& gradient,
                                                            const std::shared_ptr<ProcessGroup>& dp_group,
                                                            const std::shared_ptr<ProcessGroup>& tp_group);

// Per-quantity totals of the whole model from one rank's partial sums. `sums` is f64 [2, K] on
// the parameters' device: row 0 summed over parameters replicated over the tensor-parallel
// group, row 1 over its shards. Under ZeRO (`dp_sharded`: each data-parallel rank holds other
// pieces) both rows add up over `dp_group`; row 1 then over `tp_group`; replicated parameters
// count once. Returns row 0 + row 1 (K values, the same on every rank): one host read.
std::vector<double> combine_over_ranks(Tensor sums, bool dp_sharded, const std::shared_ptr<ProcessGroup>& dp_group,
                                       const std::shared_ptr<ProcessGroup>& tp_group);

// The factor clipping scales every gradient by: max_norm / norm when norm > max_norm
// (max_norm > 0), else 1. The trainer hands it to AdamW::step, which applies it while it reads
// the gradients (no pass over them of its own).
double clip_factor(double max_norm, double norm);

// Scales every gradient by clip_factor(max_norm, norm) in place. Returns the factor applied
// (1 when nothing changed).
double clip_grad_norm(std::vector<Parameter>& params, double max_norm, double norm);

}  // namespace zt
