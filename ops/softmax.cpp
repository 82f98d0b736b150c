#include "ops/softmax.h"

#include "framework/autograd/node.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"
#include "ops/softmax_kernels.h"

namespace zt::ops {

namespace {

struct SoftmaxNode : Node {
  SavedTensor saved_y;  // the output: backward needs nothing else
  SoftmaxNode(const Variable& x, Tensor out) : Node("softmax", {x}), saved_y(std::move(out)) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor& y = saved_y.get(*this);
    const Tensor g = grad_as(grad, y.dtype());
    return {ZT_ON_DEVICE(g, softmax_backward_cpu(g, y), softmax_backward_cuda(g, y))};
  }
  void release_saved() override { saved_y.release(); }
};

}  // namespace

Variable softmax(const Variable& x) {
  check_defined("softmax", "x", x);
  check_floating("softmax", "x", x.tensor());
  ZT_CHECK(x.tensor().dim() >= 1, "softmax: x must have at least one dimension, got shape ", shape_str(x.shape()));
  Tensor y = ZT_ON_DEVICE(x.tensor(), softmax_forward_cpu(x.tensor()), softmax_forward_cuda(x.tensor()));
  if (!needs_grad({x})) return Variable(y);
  return Variable::from_op(y, std::make_shared<SoftmaxNode>(x, y));
}

}  // namespace zt::ops
