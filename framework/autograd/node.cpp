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
      if (v.grad_fn()) {
        e.node = v.grad_fn();
      } else if (v.requires_grad()) {
        e.leaf = v.impl();
        e.dtype = leaf_grad_dtype(*v.impl());  // a compute-resident leaf's is its master's
      }
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

namespace {
thread_local NeedsGradRecorder* t_recorder = nullptr;  // the innermost alive on this thread
}  // namespace

NeedsGradRecorder::NeedsGradRecorder() : prev_(t_recorder) { t_recorder = this; }
NeedsGradRecorder::~NeedsGradRecorder() { t_recorder = prev_; }

void NeedsGradRecorder::note(const Variable& v) {
  std::vector<Variable>& seen = v.is_leaf() ? leaves_ : non_leaves_;
  for (const Variable& s : seen)  // a region reads a few dozen parameters: a scan is enough
    if (s.impl() == v.impl()) return;
  seen.push_back(v);
}

bool needs_grad(const std::vector<Variable>& inputs) {
  for (NeedsGradRecorder* r = t_recorder; r; r = r->prev_)
    for (const Variable& v : inputs)
      if (v.requires_grad()) r->note(v);
  if (!grad_enabled()) return false;
  for (const Variable& v : inputs)
    if (v.requires_grad()) return true;
  return false;
}

}  // namespace zt
