#include "models/leading_rows.h"

#include "framework/autograd/node.h"
#include "framework/op_range.h"

namespace zt {

namespace {

class LeadingRowsNode : public Node {
 public:
  LeadingRowsNode(const Variable& x) : Node("leading_rows", {x}), full_(x.shape()), dtype_(x.dtype()), device_(x.device()) {}

  std::vector<Tensor> backward(const Tensor& grad) override {
    ZT_OP_RANGE("leading_rows");
    Tensor g = Tensor::zeros(full_, grad.dtype(), device_);
    g.slice(0, 0, grad.size(0)).copy_(grad);  // contiguous slice: one byte copy on any device
    return {g.dtype() == dtype_ ? g : g.to(dtype_)};
  }

 private:
  Shape full_;
  DType dtype_;
  Device device_;
};

}  // namespace

Variable leading_rows(const Variable& x, int64_t rows) {
  ZT_CHECK(x.tensor().dim() >= 1 && rows >= 0 && rows <= x.shape()[0], "leading_rows: ", rows,
           " rows of a tensor of shape ", shape_str(x.shape()));
  if (rows == x.shape()[0]) return x;
  Tensor view = x.tensor().contiguous().slice(0, 0, rows);
  if (!needs_grad({x})) return Variable(view);
  return Variable::from_op(view, std::make_shared<LeadingRowsNode>(x));
}

}  // namespace zt
