#include "ops/dropout.h"

#include <cmath>

#include "framework/autograd/node.h"
#include "ops/dropout_kernels.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

struct DropoutNode : Node {
  std::vector<uint8_t> keep;  // one byte per element: the mask the forward drew
  double p;
  DType dtype;
  bool released = false;
  DropoutNode(const Variable& x, std::vector<uint8_t> k, double prob)
      : Node("dropout", {x}), keep(std::move(k)), p(prob), dtype(x.dtype()) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    if (released) fail_released(*this);
    require_cpu("dropout", {&grad});
    return {dropout_apply_cpu(grad_as(grad, dtype), keep, p)};
  }
  void release_saved() override {
    std::vector<uint8_t>().swap(keep);
    released = true;
  }
};

}  // namespace

Variable dropout(const Variable& x, double p, Generator& gen, bool training) {
  check_defined("dropout", "x", x);
  check_floating("dropout", "x", x.tensor());
  ZT_CHECK(std::isfinite(p) && p >= 0 && p <= 1, "dropout: p must be in [0, 1], got ", p);
  if (p == 0 || !training) return x;  // identity on any device: no copy, no node, no draws
  require_cpu("dropout", {&x.tensor()});
  std::vector<uint8_t> keep = dropout_mask(x.numel(), p, gen);
  Tensor y = dropout_apply_cpu(x.tensor(), keep, p);
  if (!needs_grad({x})) return Variable(y);
  return Variable::from_op(y, std::make_shared<DropoutNode>(x, std::move(keep), p));
}

}  // namespace zt::ops
