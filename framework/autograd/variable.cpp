#include "framework/autograd/variable.h"

#include "framework/autograd/engine.h"
#include "framework/autograd/node.h"

namespace zt {

Variable::Variable(Tensor data, bool requires_grad, std::string name) : impl_(std::make_shared<VariableImpl>()) {
  ZT_CHECK(data.defined(), "Variable from an undefined tensor");
  ZT_CHECK(!requires_grad || is_floating(data.dtype()), "requires_grad on a ", dtype_name(data.dtype()),
           " tensor: only floating tensors have gradients");
  impl_->data = std::move(data);
  impl_->requires_grad = requires_grad;
  impl_->name = std::move(name);
}

Variable Variable::from_op(Tensor data, std::shared_ptr<Node> grad_fn) {
  Variable v(std::move(data), false);
  v.impl_->requires_grad = true;
  v.impl_->grad_fn = std::move(grad_fn);
  return v;
}

const Tensor& Variable::tensor() const {
  ZT_CHECK(impl_, "use of an undefined Variable");
  return impl_->data;
}
Tensor& Variable::tensor() {
  ZT_CHECK(impl_, "use of an undefined Variable");
  return impl_->data;
}

bool Variable::requires_grad() const { return impl_ && impl_->requires_grad; }
void Variable::set_requires_grad(bool r) {
  ZT_CHECK(is_leaf(), "set_requires_grad on a non-leaf Variable");
  impl_->requires_grad = r;
}
const std::shared_ptr<Node>& Variable::grad_fn() const {
  static const std::shared_ptr<Node> none;
  return impl_ ? impl_->grad_fn : none;
}

const Tensor& Variable::grad() const {
  ZT_CHECK(has_grad(), "Variable '", name(), "' has no gradient (backward not run, or it does not require grad)");
  return impl_->grad;
}
void Variable::set_grad(Tensor g) {
  if (g.defined()) check_same_shape(tensor(), g, "set_grad");
  impl_->grad = std::move(g);
}
void Variable::zero_grad() {
  if (!impl_) return;
  if (impl_->grad_preassigned) impl_->grad.fill_(0.0);
  else impl_->grad = Tensor();
}
void Variable::preassign_grad(Tensor buffer) {
  const DType grad_dtype = leaf_grad_dtype(*impl_);
  ZT_CHECK(buffer.defined() && buffer.is_contiguous() && buffer.dtype() == grad_dtype && buffer.device() == device(),
           "preassign_grad: the buffer must be contiguous, ", dtype_name(grad_dtype), " on ", device().str());
  check_same_shape(tensor(), buffer, "preassign_grad");
  impl_->grad = std::move(buffer);
  impl_->grad_preassigned = true;
}

const std::string& Variable::name() const {
  static const std::string none;
  return impl_ ? impl_->name : none;
}
void Variable::set_name(std::string n) { impl_->name = std::move(n); }

void Variable::backward(double seed, bool retain_graph) const { run_backward(*this, Tensor(), seed, retain_graph); }
void Variable::backward(const Tensor& grad, bool retain_graph) const {
  ZT_CHECK(grad.defined(), "backward(grad) with an undefined gradient");
  run_backward(*this, grad, 1.0, retain_graph);
}

}  // namespace zt
