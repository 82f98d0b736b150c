#include "framework/autograd/engine.h"

#include <unordered_map>
#include <vector>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/mixed_precision.h"
#include "framework/autograd/node.h"
#include "framework/op_range.h"

namespace zt {

namespace {
thread_local BackwardStats t_stats;  // of the current (or last) run_backward on this thread
// The outermost running backward's list of leaf gradients waiting for their widening: a region
// backward (run_region_backward) appends to it, so they are widened when and in the order the
// outer backward widens its own.
thread_local std::vector<PendingMasterGrad>* t_conversions = nullptr;
}  // namespace

bool exclusively_owned(const Tensor& t) {
  // Every Tensor viewing a Storage holds a reference to it (views and the saved tensors of
  // nodes included), so a count of one means no other tensor can see a write into `t`.
  return t.defined() && t.is_contiguous() && t.storage().use_count() == 1;
}

void accumulate_grad(Tensor& slot, Tensor g) {
  if (!slot.defined()) {
    slot = std::move(g);  // may alias a buffer someone else holds: the next sum then copies
    return;
  }
  ZT_OP_RANGE("accumulate");
  ++t_stats.accumulated;
  if (!g.is_contiguous()) g = g.contiguous();
  const bool same_device = slot.device() == g.device();  // else add_ below reports it
  if (same_device && exclusively_owned(slot)) {
    slot.add_(g);
    return;
  }
  if (same_device && exclusively_owned(g) && g.dtype() == slot.dtype()) {
    // The slot is shared (e.g. a gradient add passed to both inputs) but the new gradient is
    // the engine's alone: sum into that instead (a + b == b + a exactly, so same result).
    g.add_(slot);
    slot = std::move(g);
    return;
  }
  Tensor sum = slot.clone();
  sum.add_(g);
  slot = std::move(sum);
}

namespace {

thread_local LeafGradReadyHook leaf_ready_hook;

// A leaf's gradient lands in its slot; a preassigned slot (a bucket view) is always summed
// into in place, whoever else holds its storage.
void accumulate_leaf_grad(VariableImpl& leaf, Tensor g) {
  if (!leaf.grad_preassigned) return accumulate_grad(leaf.grad, std::move(g));
  ZT_OP_RANGE("accumulate");
  ++t_stats.accumulated;
  leaf.grad.add_(g.dtype() == leaf.grad.dtype() ? g : g.to(leaf.grad.dtype()));
}

// A folding node's backward: the gradients other consumers already passed to its inputs'
// producers are its addends (leaves get none: their sums go through the engine's leaf path).
std::vector<Tensor> run_folding_backward(Node& n, const Tensor& g, std::unordered_map<Node*, Tensor>& grads,
                                         std::vector<bool>& summed) {
  const auto& edges = n.edges();
  std::vector<Tensor> addends(edges.size());
  for (size_t i = 0; i < edges.size(); ++i) {
    if (!edges[i].node) continue;
    auto it = grads.find(edges[i].node.get());
    if (it != grads.end() && it->second.defined() && it->second.dtype() == edges[i].dtype) addends[i] = it->second;
  }
  summed.assign(edges.size(), false);
  std::vector<Tensor> out = n.backward_folding(g, addends, summed);
  for (size_t i = 0; i < summed.size() && i < out.size(); ++i)
    ZT_CHECK(!summed[i] || (addends[i].defined() && out[i].defined() && out[i].dtype() == edges[i].dtype),
             "backward of '", n.name(), "': input ", i, " marked summed without an addend of its dtype");
  return out;
}

void check_grad(const Node& node, size_t i, const Tensor& g) {
  const Edge& e = node.edges()[i];
  ZT_CHECK(g.shape() == e.shape, "backward of '", node.name(), "': gradient of input ", i, " has shape ",
           shape_str(g.shape()), " but the input has shape ", shape_str(e.shape));
}

}  // namespace

LeafGradReadyHookGuard::LeafGradReadyHookGuard(LeafGradReadyHook hook) : prev_(std::move(leaf_ready_hook)) {
  leaf_ready_hook = std::move(hook);
}
LeafGradReadyHookGuard::~LeafGradReadyHookGuard() { leaf_ready_hook = std::move(prev_); }

BackwardStats last_backward_stats() { return t_stats; }

namespace {

// `region`: null for run_backward; for run_region_backward, the leaves the region declared.
void backward_pass(const Variable& root, const Tensor& grad, double seed, bool retain_graph,
                   const std::function<bool(const VariableImpl&)>* region) {
  if (!region) t_stats = {};  // a region's sums count towards the backward that runs it
  ZT_CHECK(root.defined(), "backward on an undefined Variable");
  ZT_CHECK(root.requires_grad(), "backward on a Variable that does not require grad (shape ",
           shape_str(root.shape()), "): no input of the computation requires grad");
  if (grad.defined()) {
    ZT_CHECK(grad.shape() == root.shape(), "backward: gradient of shape ", shape_str(grad.shape()),
             " for an output of shape ", shape_str(root.shape()));
  } else {
    ZT_CHECK(root.numel() == 1, "backward on a non-scalar output of shape ", shape_str(root.shape()),
             " needs an explicit gradient of that shape");
  }
  NoGradGuard no_grad;  // backward itself builds no graph
  // A region's backward reports no leaf as ready (the backward that runs it does, by the region
  // node's leaf edges) and may touch only the leaves its node declared.
  const LeafGradReadyHook hook = region ? nullptr : leaf_ready_hook;
  auto check_declared = [&](const VariableImpl& leaf) {
    ZT_CHECK(!region || (*region)(leaf), "checkpoint region: its recomputation reached the leaf '", leaf.name,
             "' (shape ", shape_str(leaf.data.shape()), ") that its forward never passed to an op; ops must ask "
             "needs_grad() about every input they read (node.h)");
  };
  std::vector<PendingMasterGrad> own_conversions;
  std::vector<PendingMasterGrad>& leaf_conversions = region ? *t_conversions : own_conversions;
  struct ConversionsScope {  // the outermost backward publishes its list for the regions it runs
    std::vector<PendingMasterGrad>* prev;
    bool active;
    ~ConversionsScope() {
      if (active) t_conversions = prev;
    }
  } scope{t_conversions, region == nullptr};
  if (!region) t_conversions = &own_conversions;

  Node* root_node = root.grad_fn().get();
  if (!root_node) {  // a leaf: its gradient is the seed
    check_declared(*root.impl());
    Tensor g = grad.defined() ? grad : Tensor::full(root.shape(), seed, root.dtype(), root.device());
    accumulate_leaf_grad(*root.impl(), std::move(g));
    if (hook) hook(*root.impl());
    return;
  }

  // Count, for every node reachable from the root, how many edges point at it; a node runs
  // once all of its consumers have passed their gradient down (Kahn's algorithm).
  // With a leaf-ready hook, also count the edges into each leaf: its gradient is final when
  // the last of them has been passed.
  std::unordered_map<VariableImpl*, int> leaf_edges;
  std::unordered_map<Node*, int> pending;
  std::vector<Node*> stack{root_node};
  pending[root_node] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->edges()) {
      if (hook && e.leaf) ++leaf_edges[e.leaf.get()];
      if (!e.node) continue;
      auto [it, inserted] = pending.try_emplace(e.node.get(), 0);
      ++it->second;
      if (inserted) stack.push_back(e.node.get());
    }
  }

  // Keep the nodes alive while we run them even if the caller drops the graph.
  std::shared_ptr<Node> keep_root = root.grad_fn();
  std::unordered_map<Node*, Tensor> grads;  // gradient of each pending node's output
  std::vector<Node*> ready{root_node};
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    std::vector<Tensor> in_grads;
    std::vector<bool> summed;  // inputs whose gradient the node returned already summed (folding)
    if (n == root_node && !grad.defined()) {
      in_grads = n->backward_seeded(seed, root.tensor());
    } else {
      Tensor g = n == root_node ? grad : grads[n];
      grads.erase(n);  // this output gradient is no longer needed
      // No gradient reached this node (all its consumers returned none): it passes none on,
      // but still releases the nodes below it.
      if (!g.defined()) in_grads = std::vector<Tensor>(n->edges().size());
      else if (n->folds_gradients()) in_grads = run_folding_backward(*n, g, grads, summed);
      else in_grads = n->backward(g);
    }
    ZT_CHECK(in_grads.size() == n->edges().size(), "backward of '", n->name(), "' returned ", in_grads.size(),
             " gradients for ", n->edges().size(), " inputs");
    // A node may return a gradient in another floating dtype than its input's (a cast
    // returns its output's gradient as is): it reaches the input in the input's dtype.
    for (size_t i = 0; i < in_grads.size(); ++i) {
      const Edge& e = n->edges()[i];
      if (e.node) {
        if (in_grads[i].defined()) {
          check_grad(*n, i, in_grads[i]);
          if (in_grads[i].dtype() != e.dtype) {
            ZT_OP_RANGE("cast");
            in_grads[i] = in_grads[i].to(e.dtype);
          }
          if (i < summed.size() && summed[i]) {
            grads[e.node.get()] = std::move(in_grads[i]);  // already holds the other consumers' sum
            ++t_stats.folded;
          } else {
            accumulate_grad(grads[e.node.get()], std::move(in_grads[i]));
          }
        }
        if (--pending[e.node.get()] == 0) ready.push_back(e.node.get());
      } else if (e.leaf) {
        if (in_grads[i].defined()) {
          check_grad(*n, i, in_grads[i]);
          check_declared(*e.leaf);
          if (in_grads[i].dtype() != e.dtype) leaf_conversions.push_back({e.leaf, std::move(in_grads[i]), e.dtype});
          else accumulate_leaf_grad(*e.leaf, std::move(in_grads[i]));
        }
        if (hook && --leaf_edges[e.leaf.get()] == 0) {
          // Final: its conversions now (not batched at the end), then the hook.
          std::vector<PendingMasterGrad> mine;
          for (auto it = leaf_conversions.begin(); it != leaf_conversions.end();) {
            if (it->leaf == e.leaf) {
              mine.push_back(std::move(*it));
              it = leaf_conversions.erase(it);
            } else {
              ++it;
            }
          }
          widen_master_grads(mine, accumulate_leaf_grad);
          hook(*e.leaf);
        }
      }
    }
    if (!retain_graph) n->release_saved();
  }
  if (!region) widen_master_grads(leaf_conversions, accumulate_leaf_grad);
}

}  // namespace

void run_backward(const Variable& root, const Tensor& grad, double seed, bool retain_graph) {
  backward_pass(root, grad, seed, retain_graph, nullptr);
}

void run_region_backward(const Variable& root, const Tensor& grad,
                         const std::function<bool(const VariableImpl&)>& declared_leaves) {
  ZT_CHECK(t_conversions, "run_region_backward outside a backward: only a node's backward may run one");
  ZT_CHECK(grad.defined(), "run_region_backward: the region's output gradient is undefined");
  backward_pass(root, grad, 1.0, /*retain_graph=*/false, &declared_leaves);
}

}  // namespace zt
