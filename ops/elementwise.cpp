#include "ops/elementwise.h"

#include "framework/autograd/node.h"
#include "ops/elementwise_kernels.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"
#include "ops/reduce_kernels.h"

namespace zt::ops {

namespace {

const char* op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
  }
  return "?";
}

// b broadcasts over a when its shape is a trailing part of a's (equal shapes included).
void check_binary(BinaryOp op, const Variable& a, const Variable& b) {
  const char* name = op_name(op);
  check_defined(name, "a", a);
  check_defined(name, "b", b);
  check_floating(name, "a", a.tensor());
  check_floating(name, "b", b.tensor());
  check_same_dtype(name, "a", a.tensor(), "b", b.tensor());
  check_same_device(name, "a", a.tensor(), "b", b.tensor());
  const Shape& as = a.shape();
  const Shape& bs = b.shape();
  const bool trailing = bs.size() <= as.size() && std::equal(bs.begin(), bs.end(), as.end() - bs.size());
  ZT_CHECK(trailing, name, ": shapes ", shape_str(as), " and ", shape_str(bs),
           " do not match: b must have a's shape or a trailing part of it (a row broadcast)");
}

// d/db of a row-broadcast b sums the per-element gradient over a's leading dimensions.
Tensor reduce_to_b(const Tensor& per_element, const Shape& b_shape) {
  if (per_element.shape() == b_shape) return per_element;
  const int64_t cols = shape_numel(b_shape);
  return ZT_ON_DEVICE(per_element, sum_rows_cpu(per_element, cols), sum_rows_cuda(per_element, cols)).view(b_shape);
}

struct BinaryNode : Node {
  BinaryOp op;
  SavedTensor a, b;  // mul only: a saved when b needs a gradient, b when a does
  Shape b_shape;
  DType dtype;
  BinaryNode(BinaryOp o, const Variable& va, const Variable& vb)
      : Node(op_name(o), {va, vb}), op(o), b_shape(vb.shape()), dtype(va.dtype()) {
    if (op == BinaryOp::mul) {
      if (needs_input_grad(1)) a = va.tensor();
      if (needs_input_grad(0)) b = vb.tensor();
    }
  }
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor g = grad_as(grad, dtype);
    auto scale_k = [](const Tensor& t, double f) { return ZT_ON_DEVICE(t, scale_cpu(t, f), scale_cuda(t, f)); };
    auto mul_k = [](const Tensor& x, const Tensor& y) {
      return ZT_ON_DEVICE(x, binary_cpu(BinaryOp::mul, x, y), binary_cuda(BinaryOp::mul, x, y));
    };
    auto mul_sum_rows_k = [](const Tensor& x, const Tensor& y, int64_t cols) {
      return ZT_ON_DEVICE(x, mul_sum_rows_cpu(x, y, cols), mul_sum_rows_cuda(x, y, cols));
    };
    Tensor ga, gb;
    const bool broadcast = g.shape() != b_shape;
    switch (op) {
      case BinaryOp::add:
        if (needs_input_grad(0)) ga = g;
        if (needs_input_grad(1)) gb = reduce_to_b(g, b_shape);
        break;
      case BinaryOp::sub:
        if (needs_input_grad(0)) ga = g;
        if (needs_input_grad(1)) gb = scale_k(reduce_to_b(g, b_shape), -1.0);
        break;
      case BinaryOp::mul:
        if (needs_input_grad(0)) ga = mul_k(g, b.get(*this));
        if (needs_input_grad(1)) {
          const Tensor& sa = a.get(*this);
          gb = broadcast ? mul_sum_rows_k(g, sa, shape_numel(b_shape)).view(b_shape) : mul_k(g, sa);
        }
        break;
    }
    return {ga, gb};
  }
  void release_saved() override {
    a.release();
    b.release();
  }
};

Variable binary(BinaryOp op, const Variable& a, const Variable& b) {
  check_binary(op, a, b);
  Tensor out = ZT_ON_DEVICE(a.tensor(), binary_cpu(op, a.tensor(), b.tensor()), binary_cuda(op, a.tensor(), b.tensor()));
  if (!needs_grad({a, b})) return Variable(out);
  return Variable::from_op(out, std::make_shared<BinaryNode>(op, a, b));
}

struct ScaleNode : Node {
  double factor;
  DType dtype;
  ScaleNode(const Variable& a, double f) : Node("scale", {a}), factor(f), dtype(a.dtype()) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor g = grad_as(grad, dtype);
    return {ZT_ON_DEVICE(g, scale_cpu(g, factor), scale_cuda(g, factor))};
  }
};

}  // namespace

Variable add(const Variable& a, const Variable& b) { return binary(BinaryOp::add, a, b); }
Variable sub(const Variable& a, const Variable& b) { return binary(BinaryOp::sub, a, b); }
Variable mul(const Variable& a, const Variable& b) { return binary(BinaryOp::mul, a, b); }

Variable scale(const Variable& a, double factor) {
  check_defined("scale", "a", a);
  check_floating("scale", "a", a.tensor());
  Tensor out = ZT_ON_DEVICE(a.tensor(), scale_cpu(a.tensor(), factor), scale_cuda(a.tensor(), factor));
  if (!needs_grad({a})) return Variable(out);
  return Variable::from_op(out, std::make_shared<ScaleNode>(a, factor));
}

}  // namespace zt::ops
