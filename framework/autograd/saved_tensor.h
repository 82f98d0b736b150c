#pragma once
// SavedTensor: a tensor a Node keeps for its backward (an input, its output, a statistic),
// with the storage version it had when saved (as PyTorch's saved variables). Reading it in
// backward checks two things, each an integer compare:
//  - nothing wrote the storage in place since (Tensor's in-place ops, copy_, the fused
//    cross-entropy's in-place gradient, an optimizer step): else the gradient would be
//    computed from the wrong values;
//  - backward has not released it already (a second backward without retain_graph).
// Both are a zt::Error naming the op instead of silently wrong gradients.
#include <cstdint>

#include "framework/tensor.h"

namespace zt {

class Node;

class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(Tensor t);  // NOLINT: implicit, so nodes save with `saved = x.tensor()`

  // The saved tensor (undefined when nothing was saved), checked as above; `owner` names the op.
  const Tensor& get(const Node& owner) const;
  // Frees the tensor (Node::release_saved); a later get() is an error.
  void release();
  bool defined() const { return tensor_.defined(); }

 private:
  Tensor tensor_;
  uint64_t version_ = 0;
  bool released_ = false;
};

// The error for reading what a node saved after backward released it (for nodes that keep
// other data than tensors, such as dropout's mask).
[[noreturn]] void fail_released(const Node& owner);

}  // namespace zt
