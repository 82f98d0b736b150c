#include "models/cast.h"

#include "framework/autograd/node.h"

namespace zt {

namespace {

class CastNode : public Node {
 public:
  explicit CastNode(const Variable& x) : Node("cast", {x}), from_(x.dtype()) {}
  std::vector<Tensor> backward(const Tensor& grad) override { return {grad.to(from_)}; }

 private:
  DType from_;
};

}  // namespace

Variable cast(const Variable& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  ZT_CHECK(is_floating(dtype) && is_floating(x.dtype()), "cast: ", dtype_name(x.dtype()), " -> ",
           dtype_name(dtype), " (only between floating dtypes)");
  Tensor y = x.tensor().to(dtype);
  if (!needs_grad({x})) return Variable(y);
  return Variable::from_op(y, std::make_shared<CastNode>(x));
}

}  // namespace zt
