#include "ops/gelu.h"

#include "framework/autograd/node.h"
#include "ops/gelu_kernels.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

struct GeluNode : Node {
  SavedTensor saved_x;
  explicit GeluNode(const Variable& vx) : Node("gelu", {vx}), saved_x(vx.tensor()) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor& x = saved_x.get(*this);
    const Tensor g = grad_as(grad, x.dtype());
    return {ZT_ON_DEVICE(g, gelu_backward_cpu(g, x), gelu_backward_cuda(g, x))};
  }
  void release_saved() override { saved_x.release(); }
};

}  // namespace

Variable gelu(const Variable& x) {
  check_defined("gelu", "x", x);
  check_floating("gelu", "x", x.tensor());
  Tensor y = ZT_ON_DEVICE(x.tensor(), gelu_forward_cpu(x.tensor()), gelu_forward_cuda(x.tensor()));
  if (!needs_grad({x})) return Variable(y);
  return Variable::from_op(y, std::make_shared<GeluNode>(x));
}

}  // namespace zt::ops
