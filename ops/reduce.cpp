#include "ops/reduce.h"

#include "framework/autograd/node.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"
#include "ops/reduce_kernels.h"

namespace zt::ops {

namespace {

// d/dx of factor * sum(x) is factor everywhere; Tensor::full works on any device.
struct SumNode : Node {
  Shape shape;
  DType dtype;
  double factor;
  SumNode(const char* name, const Variable& x, double f) : Node(name, {x}), shape(x.shape()), dtype(x.dtype()), factor(f) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    return {Tensor::full(shape, grad.item() * factor, dtype, grad.device())};
  }
};

Variable reduce(const char* name, const Variable& x, bool mean) {
  check_defined(name, "x", x);
  check_floating(name, "x", x.tensor());
  // mean of no elements is 0/0 = NaN, as in NumPy and PyTorch.
  const double factor = mean ? 1.0 / static_cast<double>(x.numel()) : 1.0;
  Tensor out;
  if (x.device().is_cpu()) {
    out = Tensor::scalar(sum_all_cpu(x.tensor()).item() * factor, x.dtype());
  } else {  // stays on the device: no host sync
    Tensor total = ZT_ON_DEVICE(x.tensor(), sum_all_cpu(x.tensor()), sum_all_cuda(x.tensor()));
    if (factor != 1.0) total.scale_(factor);
    out = total.to(x.dtype());
  }
  if (!needs_grad({x})) return Variable(out);
  return Variable::from_op(out, std::make_shared<SumNode>(name, x, factor));
}

}  // namespace

Variable sum(const Variable& x) { return reduce("sum", x, false); }
Variable mean(const Variable& x) { return reduce("mean", x, true); }

}  // namespace zt::ops
