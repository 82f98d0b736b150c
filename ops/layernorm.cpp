#include "ops/layernorm.h"

#include <cmath>

#include "framework/autograd/node.h"
#include "ops/layernorm_kernels.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

struct LayerNormNode : Node {
  SavedTensor x, gamma, mean, rstd;
  DType dtype;
  LayerNormNode(const Variable& vx, const Variable& vg, const Variable& vb, Tensor m, Tensor s)
      : Node("layernorm", {vx, vg, vb}),
        x(vx.tensor()),
        gamma(vg.tensor()),
        mean(std::move(m)),
        rstd(std::move(s)),
        dtype(vx.dtype()) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    std::vector<bool> summed;
    return backward_folding(grad, {}, summed);
  }
  // In a residual block x also feeds the residual add, whose gradient is already there when
  // this node runs: dx is written as that gradient plus this one (the engine's separate sum,
  // a full read-read-write pass over x's gradient, disappears).
  bool folds_gradients() const override { return true; }
  std::vector<Tensor> backward_folding(const Tensor& grad, const std::vector<Tensor>& addends,
                                       std::vector<bool>& summed) override {
    std::vector<Tensor> grads(3);
    const Tensor g = grad_as(grad, dtype);
    Tensor* dx = needs_input_grad(0) ? &grads[0] : nullptr;
    Tensor* dgamma = needs_input_grad(1) ? &grads[1] : nullptr;
    Tensor* dbeta = needs_input_grad(2) ? &grads[2] : nullptr;
    const Tensor &sx = x.get(*this), &sg = gamma.get(*this), &sm = mean.get(*this), &sr = rstd.get(*this);
    const Tensor* add = dx ? foldable_addend(addends, 0, sx) : nullptr;
    ZT_ON_DEVICE(g, layernorm_backward_cpu(g, sx, sg, sm, sr, dx, dgamma, dbeta, add),
                 layernorm_backward_cuda(g, sx, sg, sm, sr, dx, dgamma, dbeta, add));
    if (add) {
      summed.assign(3, false);
      summed[0] = true;
    }
    return grads;
  }
  void release_saved() override {
    for (SavedTensor* t : {&x, &gamma, &mean, &rstd}) t->release();
  }
};

}  // namespace

Variable layernorm(const Variable& x, const Variable& gamma, const Variable& beta, double eps) {
  check_defined("layernorm", "x", x);
  check_defined("layernorm", "gamma", gamma);
  check_defined("layernorm", "beta", beta);
  check_floating("layernorm", "x", x.tensor());
  check_same_dtype("layernorm", "x", x.tensor(), "gamma", gamma.tensor());
  check_same_dtype("layernorm", "x", x.tensor(), "beta", beta.tensor());
  check_same_device("layernorm", "x", x.tensor(), "gamma", gamma.tensor());
  check_same_device("layernorm", "x", x.tensor(), "beta", beta.tensor());
  ZT_CHECK(x.tensor().dim() >= 1, "layernorm: x must have at least one dimension, got ", shape_str(x.shape()));
  const Shape c_shape{x.shape().back()};
  ZT_CHECK(gamma.shape() == c_shape && beta.shape() == c_shape, "layernorm: x ", shape_str(x.shape()), ", gamma ",
           shape_str(gamma.shape()), ", beta ", shape_str(beta.shape()), ": gamma and beta must be ",
           shape_str(c_shape));
  ZT_CHECK(std::isfinite(eps) && eps >= 0, "layernorm: eps must be finite and >= 0, got ", eps);
  Tensor mean, rstd;
  Tensor y = ZT_ON_DEVICE(x.tensor(), layernorm_forward_cpu(x.tensor(), gamma.tensor(), beta.tensor(), eps, mean, rstd),
                          layernorm_forward_cuda(x.tensor(), gamma.tensor(), beta.tensor(), eps, mean, rstd));
  if (!needs_grad({x, gamma, beta})) return Variable(y);
  return Variable::from_op(y, std::make_shared<LayerNormNode>(x, gamma, beta, mean, rstd));
}

}  // namespace zt::ops
