#pragma once
// The named trainable tensors of a model, in a fixed order. The optimizer, gradient
// clipping and checkpoints all walk this list, so names are the checkpoint keys and the
// decay flag says which tensors get weight decay (matrices and embeddings, not biases or
// LayerNorm gains).
#include <string>
#include <vector>

#include "framework/autograd/variable.h"
#include "models/parameter_group.h"
#include "models/tensor_parallel_split.h"

namespace zt {

struct Parameter {
  std::string name;
  Variable var;  // leaf, requires_grad; under tensor parallelism this rank's shard
  bool decay = true;
  ShardSpec shard;  // how the whole tensor is split over the tensor-parallel ranks
  // The part of the model it belongs to (per-group signals). A tied embedding table that is also
  // the head counts as embedding.
  ParamGroup group = ParamGroup::embedding;
};

class ParameterRegistry {
 public:
  // Registers a new leaf holding `init` (this rank's shard when `shard` splits it) in `group`;
  // names must be unique.
  Variable add(const std::string& name, Tensor init, bool decay, ParamGroup group, ShardSpec shard = {});

  const std::vector<Parameter>& all() const { return params_; }
  std::vector<Parameter>& all() { return params_; }
  const Parameter& get(const std::string& name) const;  // error naming the missing key
  int64_t numel() const;                                // total trainable elements
  void zero_grad();

 private:
  std::vector<Parameter> params_;
};

}  // namespace zt
