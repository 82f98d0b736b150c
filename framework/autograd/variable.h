#pragma once
// Variable: a Tensor in the autograd graph (flashlight's fl::Variable, PyTorch's tensor).
// It holds the data, an optional accumulated gradient, and the Node that produced it
// (none for leaves such as parameters and inputs). Copies share one underlying record.
#include <memory>
#include <string>

#include "framework/autograd/mixed_precision.h"
#include "framework/tensor.h"

namespace zt {

class Node;

struct VariableImpl {
  Tensor data;
  Tensor grad;  // undefined until backward reaches this leaf
  // `grad` is a buffer someone else placed (a data-parallel gradient bucket's view): the
  // engine adds every contribution into it in place and never replaces it, and zero_grad()
  // zeroes it instead of dropping it. Its owner zeroes it before the first backward.
  bool grad_preassigned = false;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  std::string name;
  // The compute-dtype copy of this leaf's data (the bf16 copy of an f32 master weight):
  // framework/autograd/mixed_precision.h owns it.
  ComputeCopy compute_copy;
};

class Variable {
 public:
  Variable() = default;
  explicit Variable(Tensor data, bool requires_grad = false, std::string name = {});
  // The output of an op: grad_fn is the node that computes its inputs' gradients.
  static Variable from_op(Tensor data, std::shared_ptr<Node> grad_fn);

  bool defined() const { return impl_ != nullptr; }
  const Tensor& tensor() const;
  Tensor& tensor();
  const Shape& shape() const { return tensor().shape(); }
  DType dtype() const { return tensor().dtype(); }
  Device device() const { return tensor().device(); }
  int64_t numel() const { return tensor().numel(); }

  bool requires_grad() const;
  void set_requires_grad(bool r);
  const std::shared_ptr<Node>& grad_fn() const;
  bool is_leaf() const { return grad_fn() == nullptr; }

  bool has_grad() const { return impl_ && impl_->grad.defined(); }
  const Tensor& grad() const;
  void set_grad(Tensor g);
  void zero_grad();  // drops the gradient (the next backward allocates a fresh one); zeroes a preassigned one
  // Makes `buffer` (zeroed, the variable's shape, its gradient's dtype: leaf_grad_dtype) this
  // leaf's gradient for good: see VariableImpl::grad_preassigned.
  void preassign_grad(Tensor buffer);

  const std::string& name() const;
  void set_name(std::string n);

  // Backpropagates from this variable. A one-element output may omit the gradient: the
  // seed is then `seed` (1 by default), known on the host. Otherwise pass a gradient of
  // the same shape. Frees each node's saved buffers as it goes unless retain_graph.
  void backward(double seed = 1.0, bool retain_graph = false) const;
  void backward(const Tensor& grad, bool retain_graph = false) const;

  // Same data, no history.
  Variable detach() const { return Variable(tensor(), false); }

  const std::shared_ptr<VariableImpl>& impl() const { return impl_; }

 private:
  std::shared_ptr<VariableImpl> impl_;
};

}  // namespace zt
