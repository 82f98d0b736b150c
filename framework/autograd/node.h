#pragma once
// Node: one op's backward in the graph. An op's forward creates a Node subclass holding
// what its backward needs (SavedTensors: saved_tensor.h), wired to the op's inputs by edges.
//
//   Variable gelu(const Variable& x) {
//     Tensor y = gelu_forward(x.tensor());
//     if (!needs_grad({x})) return Variable(y);
//     auto node = std::make_shared<GeluNode>(std::vector<Variable>{x});  // saves what it needs
//     return Variable::from_op(y, node);
//   }
#include <memory>
#include <string>
#include <vector>

#include "framework/autograd/saved_tensor.h"
#include "framework/autograd/variable.h"

namespace zt {

class Node;

// Where an input's gradient goes: the node that produced the input, or the leaf's own
// record (to accumulate into .grad), or nowhere (input needs no gradient).
struct Edge {
  std::shared_ptr<Node> node;
  std::shared_ptr<VariableImpl> leaf;
  Shape shape;  // the input's shape, to check the gradient a node returns
  // The input's dtype (a leaf's: leaf_grad_dtype, mixed_precision.h): the engine converts a
  // gradient to it.
  DType dtype = DType::f32;
  bool needs_grad() const { return node || leaf; }
};

class Node {
 public:
  Node(std::string name, const std::vector<Variable>& inputs);
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Gradients of the inputs, one per input, given the gradient of the output. An undefined
  // Tensor means no gradient for that input; skip work for inputs where !needs_input_grad(i).
  // A gradient may come in another floating dtype than its input's (the engine converts it).
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;

  // Called instead of backward() when this node's output is the root of backward() and the
  // seed is a host-known scalar (loss.backward() or loss.backward(scale)). The default
  // materialises the seed as a tensor; an op whose gradient was fused into its forward pass
  // (cross-entropy) overrides it to hand back that gradient without another pass.
  virtual std::vector<Tensor> backward_seeded(double seed, const Tensor& output_like);

  // Gradient folding: when another consumer of input i has already passed its gradient down,
  // the engine holds it (`addends[i]`; undefined when none, or for leaves). A node whose
  // kernel can add it while writing its own gradient of that input (one pass instead of the
  // engine's separate sum, which reads both and writes the total) returns addends[i] + its
  // gradient for that input and sets summed[i]; the engine then takes the result as the
  // input's gradient so far. Addends are read-only (others may hold them) and already in the
  // input's dtype; a node folds one only where its gradient has that dtype and shape.
  // Called instead of backward() only for nodes whose folds_gradients() is true.
  virtual bool folds_gradients() const { return false; }
  virtual std::vector<Tensor> backward_folding(const Tensor& grad_output, const std::vector<Tensor>& addends,
                                               std::vector<bool>& summed);

  // Drops saved tensors after backward ran, so memory goes as early as possible.
  virtual void release_saved() {}

  const std::string& name() const { return name_; }
  const std::vector<Edge>& edges() const { return edges_; }
  bool needs_input_grad(size_t i) const { return i < edges_.size() && edges_[i].needs_grad(); }

 private:
  std::string name_;
  std::vector<Edge> edges_;
};

// True when grad mode is on and any of the inputs requires a gradient. Every op asks it about
// every input it reads, grad mode or not (the pattern above), which is what lets a
// NeedsGradRecorder see them.
bool needs_grad(const std::vector<Variable>& inputs);

// While alive on this thread, notes the Variables needs_grad() is asked about that require a
// gradient, in or out of grad mode: a checkpoint region's forward runs without a graph, yet must
// know which parameters it reads (checkpoint.h). Recorders nest; each sees every question.
class NeedsGradRecorder {
 public:
  NeedsGradRecorder();
  ~NeedsGradRecorder();
  NeedsGradRecorder(const NeedsGradRecorder&) = delete;
  NeedsGradRecorder& operator=(const NeedsGradRecorder&) = delete;

  // Distinct leaves that require a gradient, in the order first seen.
  const std::vector<Variable>& leaves() const { return leaves_; }
  // Non-leaf Variables that require a gradient (made by ops with a graph), in the order first seen.
  const std::vector<Variable>& non_leaves() const { return non_leaves_; }

 private:
  friend bool needs_grad(const std::vector<Variable>& inputs);
  void note(const Variable& v);

  NeedsGradRecorder* prev_;
  std::vector<Variable> leaves_, non_leaves_;
};

}  // namespace zt
