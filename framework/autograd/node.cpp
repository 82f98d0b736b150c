#include "framework/autograd/node.h"

#include "framework/autograd/grad_mode.h"

namespace zt {

Node::Node(std::string name, const std::vector<Variable>& inputs) : name_(std::move(name)) {
  edges_.reserve(inputs.size());
  for (const Variable& v : inputs) {
    Edge e;
    if (v.defined()) {
      e.shape = v.shape();
      e.dtype = v.dtype();
      if (v.grad_fn()) e.node = v.grad_fn();
      else if (v.requires_grad()) e.leaf = v.impl();
    }
    edges_.push_back(std::move(e));
  }
}

std::vector<Tensor> Node::backward_seeded(double seed, const Tensor& output_like) {
  return backward(Tensor::full(output_like.shape(), seed, output_like.dtype(), output_like.device()));
}

std::vector<Tensor> Node::backward_folding(const Tensor& grad_output, const std::vector<Tensor>&,
                                           std::vector<bool>&) {
  return backward(grad_output);
}

bool needs_grad(const std::vector<Variable>& inputs) {
  if (!grad_enabled()) return false;
  for (const Variable& v : inputs)
    if (v.requires_grad()) return true;
  return false;
}

}  // namespace zt
