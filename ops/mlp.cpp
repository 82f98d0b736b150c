#include "ops/mlp.h"

#include <atomic>

#include "framework/autograd/node.h"
#include "ops/gelu.h"
#include "ops/gelu_kernels.h"
#include "ops/matmul.h"
#include "ops/matmul_kernels.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

std::atomic<int64_t> g_fused_forward{0}, g_fused_backward{0};

Variable composite(const Variable& x, const Variable& w_fc, const Variable& b_fc, const Variable& w_proj,
                   const Variable& b_proj, const Variable& residual) {
  return linear(gelu(linear(x, w_fc, b_fc)), w_proj, b_proj, residual);
}

// The CUDA MLP with GELU on the epilogues. Saves what its backward reads: x and w_fc for the fc
// gradients, the pre-activation for d pre, the activation for w_proj's gradient, and w_proj
// (a weight: held by its parameter anyway). The residual's gradient is the output's.
struct MlpNode : Node {
  SavedTensor w_proj, x, w_fc, pre, act;  // pre, act: [rows, hidden]
  Shape x_shape, hidden_shape;  // hidden_shape: [rows, hidden]
  DType dtype;
  MlpNode(const Variable& vx, const Variable& vw_fc, const Variable& vb_fc, const Variable& vw_proj,
          const Variable& vb_proj, const Variable& vresidual, const Tensor& pre_t, const Tensor& act_t)
      : Node("mlp", {vx, vw_fc, vb_fc, vw_proj, vb_proj, vresidual}), w_proj(vw_proj.tensor()), x_shape(vx.shape()),
        hidden_shape(pre_t.shape()), dtype(vx.dtype()) {
    if (needs_input_grad(1)) x = vx.tensor();
    if (needs_input_grad(0)) w_fc = vw_fc.tensor();
    if (needs_fc_grads()) pre = pre_t;
    if (needs_input_grad(3)) act = act_t;
  }
  bool needs_fc_grads() const { return needs_input_grad(0) || needs_input_grad(1) || needs_input_grad(2); }

  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor g = grad_as(grad, dtype);  // [rows, out] in memory
    const Tensor& sw_proj = w_proj.get(*this);
    LinearGrads proj;
    if (needs_input_grad(3) || needs_input_grad(4))
      proj = linear_backward(g, act.get(*this), sw_proj, hidden_shape, false, needs_input_grad(3), needs_input_grad(4));
    const Tensor dresidual = needs_input_grad(5) ? g : Tensor();
    if (!needs_fc_grads()) return {Tensor(), Tensor(), Tensor(), proj.dw, proj.db, dresidual};
    Tensor dpre = Tensor::empty(hidden_shape, dtype, g.device());
    const Tensor& spre = pre.get(*this);
    if (ZT_ON_DEVICE(g, false, gelu_input_grad_cuda(g, sw_proj, spre, dpre))) {
      g_fused_backward.fetch_add(1, std::memory_order_relaxed);
    } else {  // d act = g w_proj, then the GELU kernel
      const Tensor dact = linear_backward(g, Tensor(), sw_proj, hidden_shape, true, false, false).dx;
      dpre = ZT_ON_DEVICE(dact, gelu_backward_cpu(dact, spre), gelu_backward_cuda(dact, spre));
    }
    // b_fc's gradient from the packed column reduction, as the linear layer's: cuBLASLt's
    // DGELU_BGRAD measured slower (framework/cuda/blas.h).
    LinearGrads fc = linear_backward(dpre, x.get(*this), w_fc.get(*this), x_shape, needs_input_grad(0), needs_input_grad(1),
                                     needs_input_grad(2));
    return {fc.dx, fc.dw, fc.db, proj.dw, proj.db, dresidual};
  }
  void release_saved() override {
    for (SavedTensor* t : {&x, &w_fc, &w_proj, &pre, &act}) t->release();
  }
};

void check_bias(const Variable& x, const Variable& w, const Variable& b, const char* name) {
  if (!b.defined()) return;
  check_floating("mlp", name, b.tensor());
  check_same_dtype("mlp", "x", x.tensor(), name, b.tensor());
  check_same_device("mlp", "x", x.tensor(), name, b.tensor());
  ZT_CHECK(b.shape() == Shape{w.shape()[0]}, "mlp: ", name, " ", shape_str(b.shape()), ": expected [", w.shape()[0],
           "]");
}

}  // namespace

MlpFusionStats mlp_fusion_stats() { return {g_fused_forward.load(), g_fused_backward.load()}; }

Variable mlp(const Variable& x, const Variable& w_fc, const Variable& b_fc, const Variable& w_proj,
             const Variable& b_proj, const Variable& residual) {
  check_operands("mlp", "x", x, "w_fc", w_fc);
  check_operands("mlp", "x", x, "w_proj", w_proj);
  const Shape& xs = x.shape();
  const Shape &fs = w_fc.shape(), &ps = w_proj.shape();
  ZT_CHECK(fs.size() == 2 && ps.size() == 2, "mlp: w_fc ", shape_str(fs), " and w_proj ", shape_str(ps),
           " must be 2-D ([hidden, in] and [out, hidden])");
  ZT_CHECK(!xs.empty() && xs.back() == fs[1], "mlp: x ", shape_str(xs), " and w_fc ", shape_str(fs),
           ": x's last dimension must equal w_fc's in (", fs[1], ")");
  ZT_CHECK(ps[1] == fs[0], "mlp: w_fc ", shape_str(fs), " and w_proj ", shape_str(ps), ": w_proj's in must equal w_fc's hidden (",
           fs[0], ")");
  check_bias(x, w_fc, b_fc, "b_fc");
  check_bias(x, w_proj, b_proj, "b_proj");
  Shape out_shape(xs.begin(), xs.end() - 1);
  out_shape.push_back(ps[0]);
  check_residual("mlp", x, residual, out_shape);

  // The epilogues exist on CUDA only: elsewhere the composite.
  const int64_t rows = shape_numel(Shape(xs.begin(), xs.end() - 1)), hidden = fs[0];
  if (ZT_ON_DEVICE(x.tensor(), false, x.dtype() != DType::f64 && mlp_epilogues_enabled()) && rows * hidden > 0) {
    Tensor pre = Tensor::empty({rows, hidden}, x.dtype(), x.device());
    Tensor act = Tensor::empty({rows, hidden}, x.dtype(), x.device());
    const Tensor b_fc_t = b_fc.defined() ? b_fc.tensor() : Tensor();
    if (ZT_ON_DEVICE(x.tensor(), false, linear_gelu_forward_cuda(x.tensor(), w_fc.tensor(), b_fc_t, act, pre))) {
      g_fused_forward.fetch_add(1, std::memory_order_relaxed);
      Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
      Tensor out2d = out.view({rows, ps[0]});
      const Tensor b_proj_t = b_proj.defined() ? b_proj.tensor() : Tensor();
      const Tensor residual2d = residual.defined() ? residual.tensor().reshape({rows, ps[0]}) : Tensor();
      linear_forward(act, w_proj.tensor(), b_proj_t, out2d, residual2d);
      if (!needs_grad({x, w_fc, b_fc, w_proj, b_proj, residual})) return Variable(out);
      return Variable::from_op(out, std::make_shared<MlpNode>(x, w_fc, b_fc, w_proj, b_proj, residual, pre, act));
    }
  }
  return composite(x, w_fc, b_fc, w_proj, b_proj, residual);
}

}  // namespace zt::ops
