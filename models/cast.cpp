#include "models/cast.h"

#include "framework/autograd/node.h"
#include "framework/op_range.h"

namespace zt {

namespace {

// The gradient passes through unconverted: the engine converts it to the input's dtype
// (framework/autograd/engine.cpp), gathering the conversions into leaves, the f32 master
// weights, into one multi-tensor kernel at the end of backward.
class CastNode : public Node {
 public:
  explicit CastNode(const Variable& x) : Node("cast", {x}) {}
  std::vector<Tensor> backward(const Tensor& grad) override { return {grad}; }
};

Tensor convert(const Tensor& t, DType dtype) {
  ZT_OP_RANGE("cast");
  return t.to(dtype);
}

// A leaf's copy, made again only when the leaf's contents or view changed since.
Tensor cached_copy(VariableImpl& leaf, DType dtype) {
  VariableImpl::CastCache& c = leaf.cast_cache;
  const Tensor& d = leaf.data;
  const uint64_t version = d.storage()->version();
  if (c.copy.defined() && c.copy.dtype() == dtype && c.version == version && c.offset == d.offset() &&
      c.strides == d.strides() && c.copy.shape() == d.shape() && c.copy.storage()->version() == c.copy_version)
    return c.copy;
  Tensor copy = convert(d, dtype);
  c = {copy, version, copy.storage()->version(), d.offset(), d.strides()};
  return c.copy;
}

}  // namespace

Variable cast(const Variable& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  ZT_CHECK(is_floating(dtype) && is_floating(x.dtype()), "cast: ", dtype_name(x.dtype()), " -> ",
           dtype_name(dtype), " (only between floating dtypes)");
  Tensor y = x.is_leaf() ? cached_copy(*x.impl(), dtype) : convert(x.tensor(), dtype);
  if (!needs_grad({x})) return Variable(y);
  return Variable::from_op(y, std::make_shared<CastNode>(x));
}

}  // namespace zt
