#include "ops/rmsnorm.h"

#include <cmath>

#include "framework/autograd/node.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"
#include "ops/rmsnorm_kernels.h"

namespace zt::ops {

namespace {

struct RmsNormNode : Node {
  SavedTensor x, gamma, rstd;
  DType dtype;
  RmsNormNode(const Variable& vx, const Variable& vg, Tensor s)
      : Node("rmsnorm", {vx, vg}), x(vx.tensor()), gamma(vg.tensor()), rstd(std::move(s)), dtype(vx.dtype()) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    std::vector<bool> summed;
    return backward_folding(grad, {}, summed);
  }
  // As LayerNorm's: in a pre-norm residual block x also feeds the residual add, whose gradient
  // is there when this node runs; dx is written as that gradient plus this one (no separate
  // read-read-write pass over x's gradient in the engine).
  bool folds_gradients() const override { return true; }
  std::vector<Tensor> backward_folding(const Tensor& grad, const std::vector<Tensor>& addends,
                                       std::vector<bool>& summed) override {
    std::vector<Tensor> grads(2);
    const Tensor g = grad_as(grad, dtype);
    Tensor* dx = needs_input_grad(0) ? &grads[0] : nullptr;
    Tensor* dgamma = needs_input_grad(1) ? &grads[1] : nullptr;
    const Tensor &sx = x.get(*this), &sg = gamma.get(*this), &sr = rstd.get(*this);
    const Tensor* add = dx ? foldable_addend(addends, 0, sx) : nullptr;
    ZT_ON_DEVICE(g, rmsnorm_backward_cpu(g, sx, sg, sr, dx, dgamma, add),
                 rmsnorm_backward_cuda(g, sx, sg, sr, dx, dgamma, add));
    if (add) summed.assign({true, false});
    return grads;
  }
  void release_saved() override {
    for (SavedTensor* t : {&x, &gamma, &rstd}) t->release();
  }
};

}  // namespace

Variable rmsnorm(const Variable& x, const Variable& gamma, double eps) {
  check_defined("rmsnorm", "x", x);
  check_defined("rmsnorm", "gamma", gamma);
  check_floating("rmsnorm", "x", x.tensor());
  check_same_dtype("rmsnorm", "x", x.tensor(), "gamma", gamma.tensor());
  check_same_device("rmsnorm", "x", x.tensor(), "gamma", gamma.tensor());
  ZT_CHECK(x.tensor().dim() >= 1, "rmsnorm: x must have at least one dimension, got ", shape_str(x.shape()));
  const Shape c_shape{x.shape().back()};
  ZT_CHECK(gamma.shape() == c_shape, "rmsnorm: x ", shape_str(x.shape()), ", gamma ", shape_str(gamma.shape()),
           ": gamma must be ", shape_str(c_shape));
  ZT_CHECK(std::isfinite(eps) && eps >= 0, "rmsnorm: eps must be finite and >= 0, got ", eps);
  Tensor rstd;
  Tensor y = ZT_ON_DEVICE(x.tensor(), rmsnorm_forward_cpu(x.tensor(), gamma.tensor(), eps, rstd),
                          rmsnorm_forward_cuda(x.tensor(), gamma.tensor(), eps, rstd));
  if (!needs_grad({x, gamma})) return Variable(y);
  return Variable::from_op(y, std::make_shared<RmsNormNode>(x, gamma, rstd));
}

}  // namespace zt::ops
