#include "ops/swiglu.h"

#include "framework/autograd/node.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"
#include "ops/swiglu_kernels.h"

namespace zt::ops {

namespace {

struct SwigluNode : Node {
  SavedTensor gate_up;
  explicit SwigluNode(const Variable& v) : Node("swiglu", {v}), gate_up(v.tensor()) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor& x = gate_up.get(*this);
    const Tensor g = grad_as(grad, x.dtype());
    return {ZT_ON_DEVICE(g, swiglu_backward_cpu(g, x), swiglu_backward_cuda(g, x))};
  }
  void release_saved() override { gate_up.release(); }
};

}  // namespace

Variable swiglu(const Variable& gate_up) {
  check_defined("swiglu", "gate_up", gate_up);
  check_floating("swiglu", "gate_up", gate_up.tensor());
  const Shape& s = gate_up.shape();
  ZT_CHECK(!s.empty() && s.back() % 2 == 0, "swiglu: gate_up ", shape_str(s),
           " must have an even last dimension (gate and up halves)");
  Tensor y =
      ZT_ON_DEVICE(gate_up.tensor(), swiglu_forward_cpu(gate_up.tensor()), swiglu_forward_cuda(gate_up.tensor()));
  if (!needs_grad({gate_up})) return Variable(y);
  return Variable::from_op(y, std::make_shared<SwigluNode>(gate_up));
}

}  // namespace zt::ops
