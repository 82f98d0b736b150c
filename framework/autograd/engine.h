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

// A backward run from inside a node's backward: a checkpoint region (checkpoint.h) recomputes
// its forward and backpropagates through it. The engine's rules for it:
//  - it sums every gradient exactly as the enclosing backward would have, had the region's graph
//    been part of its own (same node order, same folding; its leaves' gradients are added into
//    .grad in place, in that order), so a region changes no bits (checkpoint.h names the two
//    orders a region's inputs can change, neither of which a transformer block has);
//  - it reports no leaf as ready: a node whose backward adds into leaves other than through its
//    returned gradients must list each such leaf among its edges (returning no gradient there),
//    and the enclosing backward reports the leaf once the last of its edges, these included,
//    has been passed. So a parameter used inside a region and elsewhere (a tied embedding, a
//    weight read by two regions) is reported once, with its final gradient;
//  - it reaches only leaves that `declared_leaves` accepts (zt::Error naming the leaf otherwise),
//    since an undeclared one could be reported early;
//  - the gradients of master weights that arrive in their compute dtype join the enclosing
//    backward's list and are widened when it widens its own;
//  - its gradient sums count in the enclosing backward's last_backward_stats().
// The graph below `root` is freed as it goes (no retain_graph). Only valid inside a backward.
void run_region_backward(const Variable& root, const Tensor& grad,
                         const std::function<bool(const VariableImpl&)>& declared_leaves);

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
