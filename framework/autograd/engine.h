#pragma once
// The backward engine: runs the graph's nodes in reverse topological order from a root.
#include <cstdint>
#include <functional>

#include "framework/autograd/variable.h"

namespace zt {

// Called during backward, once per leaf of the graph, as soon as the leaf has received its
// last gradient contribution of this backward (its .grad is final, converted to its dtype).
// Data parallelism starts a gradient bucket's all-reduce from here while backward goes on.
// Leaves the graph does not reach get no call. Installed for the current thread by the guard.
using LeafGradReadyHook = std::function<void(VariableImpl& leaf)>;
class LeafGradReadyHookGuard {
 public:
  explicit LeafGradReadyHookGuard(LeafGradReadyHook hook);
  ~LeafGradReadyHookGuard();
  LeafGradReadyHookGuard(const LeafGradReadyHookGuard&) = delete;
  LeafGradReadyHookGuard& operator=(const LeafGradReadyHookGuard&) = delete;

 private:
  LeafGradReadyHook prev_;
};

// grad: the root's gradient; undefined means a host scalar `seed` (root must have one element).
void run_backward(const Variable& root, const Tensor& grad, double seed, bool retain_graph);

// What the last run_backward on this thread did with gradients that met at one input: sums
// through accumulate_grad (a separate pass; leaf sums included), and sums a node folded into
// its own kernel (Node::backward_folding).
struct BackwardStats {
  int64_t accumulated = 0;
  int64_t folded = 0;
};
BackwardStats last_backward_stats();

// slot += g, the engine's gradient sum (exposed for tests). An undefined slot takes g itself
// (no copy, so it may alias a buffer others hold; pass g by move so the engine's own
// reference does not count as one). A defined slot is summed in place only when it is
// exclusively_owned: a node may hand one buffer to several inputs (add passes its output
// gradient through twice) or return a tensor it keeps saved, and such a buffer must not
// change under its other holders. Otherwise the sum goes into g when g is exclusively owned
// (and of the slot's dtype), else into a fresh buffer.
void accumulate_grad(Tensor& slot, Tensor g);

// True when `t` is contiguous and no other Tensor (view, other gradient, saved tensor)
// references its storage, so writing into it in place is invisible to everyone else.
bool exclusively_owned(const Tensor& t);

}  // namespace zt
