#include "ops/cast.h"

#include "framework/autograd/mixed_precision.h"
#include "framework/autograd/node.h"
#include "framework/op_range.h"

namespace zt::ops {

namespace {

// The gradient passes through unconverted: the engine converts it to the input's dtype
// (widen_master_grads for leaves, one multi-tensor kernel at the end of backward).
class CastNode : public Node {
 public:
  explicit CastNode(const Variable& x) : Node("cast", {x}) {}
  std::vector<Tensor> backward(const Tensor& grad) override { return {grad}; }
};

Tensor convert(const Tensor& t, DType dtype) {
  ZT_OP_RANGE("cast");
  return t.to(dtype);
}

}  // namespace

Variable cast(const Variable& x, DType dtype) {
  // A compute-resident leaf of that dtype still gets its node: the graph of its master's.
  const bool resident = x.is_leaf() && is_compute_resident(*x.impl());
  if (x.dtype() == dtype && !resident) return x;
  ZT_CHECK(is_floating(dtype) && is_floating(x.dtype()), "cast: ", dtype_name(x.dtype()), " -> ",
           dtype_name(dtype), " (only between floating dtypes)");
  Tensor y = x.is_leaf() ? compute_copy(*x.impl(), dtype) : convert(x.tensor(), dtype);
  if (!needs_grad({x})) return Variable(y);
  return Variable::from_op(y, std::make_shared<CastNode>(x));
}

}  // namespace zt::ops
