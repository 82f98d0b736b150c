#include "ops/matmul.h"

#include <atomic>

#include "framework/autograd/node.h"
#include "ops/matmul_kernels.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"
#include "ops/reduce_kernels.h"

namespace zt::ops {

namespace {

std::atomic<int64_t> g_residual_gemms{0};

// "[3, 2]^T" for a transposed operand, so shape errors read like the call.
std::string operand_str(const Shape& s, bool trans) { return shape_str(s) + (trans ? "^T" : ""); }

// How a call maps onto gemm_cpu: batched ([B, M, K] x [B, K, N]) or one 2-D product (a 2-D
// call, or a [..., K] x [K, N] call with a's leading dimensions flattened into M).
struct MatmulPlan {
  GemmDims dims;
  Shape out_shape;
};

void gemm_on_device(const Tensor& a, const Tensor& b, Tensor& out, const GemmDims& d, bool accumulate = false) {
  ZT_ON_DEVICE(out, gemm_cpu(a, b, out, d, accumulate), gemm_cuda(a, b, out, d, accumulate));
}

MatmulPlan plan_matmul(const Shape& a, const Shape& b, bool ta, bool tb) {
  auto fail_inner = [&](int64_t ka, int64_t kb) {
    ZT_FAIL("matmul: ", operand_str(a, ta), " x ", operand_str(b, tb), ": inner dimensions ", ka, " and ", kb,
            " differ");
  };
  MatmulPlan p;
  p.dims.trans_a = ta;
  p.dims.trans_b = tb;
  if (b.size() == 2 && (a.size() == 2 || !ta)) {
    ZT_CHECK(a.size() >= 1, "matmul: a must have at least one dimension, got ", shape_str(a));
    // 2-D, or [..., K] x [K, N] (b shared by every row of a).
    const int64_t K = ta ? a[0] : a.back();
    const int64_t kb = tb ? b[1] : b[0];
    if (K != kb) fail_inner(K, kb);
    p.dims.K = K;
    p.dims.N = tb ? b[0] : b[1];
    p.dims.M = a.size() == 2 && ta ? a[1] : (K == 0 ? shape_numel(Shape(a.begin(), a.end() - 1)) : shape_numel(a) / K);
    p.out_shape = a.size() == 2 ? Shape{p.dims.M, p.dims.N} : Shape(a.begin(), a.end() - 1);
    if (a.size() != 2) p.out_shape.push_back(p.dims.N);
    return p;
  }
  if (a.size() == 3 && b.size() == 3) {
    ZT_CHECK(a[0] == b[0], "matmul: ", operand_str(a, ta), " x ", operand_str(b, tb), ": batch sizes ", a[0], " and ",
             b[0], " differ");
    const int64_t K = ta ? a[1] : a[2];
    const int64_t kb = tb ? b[2] : b[1];
    if (K != kb) fail_inner(K, kb);
    p.dims.batch = a[0];
    p.dims.M = ta ? a[2] : a[1];
    p.dims.K = K;
    p.dims.N = tb ? b[1] : b[2];
    p.out_shape = {a[0], p.dims.M, p.dims.N};
    return p;
  }
  ZT_FAIL("matmul: unsupported operands ", operand_str(a, ta), " x ", operand_str(b, tb),
          " (expected 2-D x 2-D, 3-D x 3-D with equal batch, or [..., K] x [K, N] without trans_a)");
}

// Gradients of out = op(a) op(b) given g = d out, per batch:
//   d op(a) = g op(b)^T   -> da = g op(b)^T        or, when trans_a, da = op(b) g^T
//   d op(b) = op(a)^T g   -> db = op(a)^T g        or, when trans_b, db = g^T op(a)
Tensor grad_a(const Tensor& g, const Tensor& b, const GemmDims& d, const Shape& a_shape) {
  Tensor da = Tensor::empty(a_shape, g.dtype(), g.device());
  if (!d.trans_a) gemm_on_device(g, b, da, {d.batch, d.M, d.K, d.N, false, !d.trans_b});
  else gemm_on_device(b, g, da, {d.batch, d.K, d.M, d.N, d.trans_b, true});
  return da;
}

Tensor grad_b(const Tensor& g, const Tensor& a, const GemmDims& d, const Shape& b_shape) {
  Tensor db = Tensor::empty(b_shape, g.dtype(), g.device());
  if (!d.trans_b) gemm_on_device(a, g, db, {d.batch, d.K, d.N, d.M, !d.trans_a, false});
  else gemm_on_device(g, a, db, {d.batch, d.N, d.K, d.M, true, d.trans_a});
  return db;
}

struct MatmulNode : Node {
  SavedTensor a, b;  // each saved only when the other operand needs a gradient
  GemmDims dims;
  Shape a_shape, b_shape;
  DType dtype;
  MatmulNode(const Variable& va, const Variable& vb, const GemmDims& d)
      : Node("matmul", {va, vb}), dims(d), a_shape(va.shape()), b_shape(vb.shape()), dtype(va.dtype()) {
    if (needs_input_grad(1)) a = va.tensor();
    if (needs_input_grad(0)) b = vb.tensor();
  }
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor g = grad_as(grad, dtype);
    return {needs_input_grad(0) ? grad_a(g, b.get(*this), dims, a_shape) : Tensor(),
            needs_input_grad(1) ? grad_b(g, a.get(*this), dims, b_shape) : Tensor()};
  }
  void release_saved() override {
    a.release();
    b.release();
  }
};

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const Tensor& residual) {
  if (ZT_ON_DEVICE(out, (linear_forward_cpu(x, w, bias, out, residual), false),
                   linear_forward_cuda(x, w, bias, out, residual)))
    g_residual_gemms.fetch_add(1, std::memory_order_relaxed);
}

int64_t residual_gemm_count() { return g_residual_gemms.load(); }

LinearGrads linear_backward(const Tensor& g, const Tensor& x, const Tensor& w, const Shape& x_shape, bool want_dx,
                            bool want_dw, bool want_db) {
  // Sizes from g and x_shape: x or w is undefined when the other operand needs no gradient.
  const int64_t out_features = g.shape().back(), in_features = x_shape.back();
  const int64_t rows = shape_numel(Shape(x_shape.begin(), x_shape.end() - 1));
  LinearGrads r;
  if (want_dx) {  // dx = g w
    r.dx = Tensor::empty(x_shape, g.dtype(), g.device());
    gemm_on_device(g, w, r.dx, {1, rows, in_features, out_features, false, false});
  }
  bool db_done = false;
  if (want_dw) {  // dw = g^T x; on CUDA db may ride on this product (db_epilogue_preferred)
    r.dw = Tensor::empty({out_features, in_features}, g.dtype(), g.device());
    Tensor db;
    if (want_db && ZT_ON_DEVICE(g, false, db_epilogue_preferred()))
      db = Tensor::empty({out_features}, g.dtype(), g.device());
    db_done = ZT_ON_DEVICE(g, (gemm_cpu(g, x, r.dw, {1, out_features, in_features, rows, true, false}), false),
                           linear_weight_grad_cuda(g, x, r.dw, db));
    if (db_done) r.db = db;
  }
  if (want_db && !db_done)  // db = sum of g's rows
    r.db = ZT_ON_DEVICE(g, sum_rows_cpu(g, out_features), sum_rows_cuda(g, out_features));
  return r;
}

namespace {

struct LinearNode : Node {
  SavedTensor x, w;  // x saved when w needs a gradient, w when x does
  Shape x_shape;
  DType dtype;
  LinearNode(const Variable& vx, const Variable& vw, const Variable& vb, const Variable& vresidual)
      : Node("linear", {vx, vw, vb, vresidual}), x_shape(vx.shape()), dtype(vx.dtype()) {
    if (needs_input_grad(1)) x = vx.tensor();
    if (needs_input_grad(0)) w = vw.tensor();
  }
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor g = grad_as(grad, dtype);
    LinearGrads l = linear_backward(g, x.get(*this), w.get(*this), x_shape, needs_input_grad(0), needs_input_grad(1),
                                    needs_input_grad(2));
    return {l.dx, l.dw, l.db, needs_input_grad(3) ? g : Tensor()};  // d residual = d out
  }
  void release_saved() override {
    x.release();
    w.release();
  }
};

}  // namespace

Variable matmul(const Variable& a, const Variable& b, bool trans_a, bool trans_b) {
  check_operands("matmul", "a", a, "b", b);
  const MatmulPlan plan = plan_matmul(a.shape(), b.shape(), trans_a, trans_b);
  Tensor out = Tensor::empty(plan.out_shape, a.dtype(), a.device());
  gemm_on_device(a.tensor(), b.tensor(), out, plan.dims);
  if (!needs_grad({a, b})) return Variable(out);
  return Variable::from_op(out, std::make_shared<MatmulNode>(a, b, plan.dims));
}

Variable linear(const Variable& x, const Variable& w, const Variable& bias, const Variable& residual) {
  check_operands("linear", "x", x, "w", w);
  const Shape& xs = x.shape();
  const Shape& ws = w.shape();
  ZT_CHECK(ws.size() == 2, "linear: w must be [out, in], got ", shape_str(ws));
  ZT_CHECK(!xs.empty() && xs.back() == ws[1], "linear: x ", shape_str(xs), " and w ", shape_str(ws),
           ": x's last dimension must equal w's in (", ws[1], ")");
  if (bias.defined()) {
    check_floating("linear", "bias", bias.tensor());
    check_same_dtype("linear", "x", x.tensor(), "bias", bias.tensor());
    check_same_device("linear", "x", x.tensor(), "bias", bias.tensor());
    ZT_CHECK(bias.shape() == Shape{ws[0]}, "linear: bias ", shape_str(bias.shape()), " for w ", shape_str(ws),
             ": expected [", ws[0], "]");
  }
  const int64_t rows = ws[1] == 0 ? shape_numel(Shape(xs.begin(), xs.end() - 1)) : x.numel() / ws[1];
  Shape out_shape(xs.begin(), xs.end() - 1);
  out_shape.push_back(ws[0]);
  check_residual("linear", x, residual, out_shape);
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor out2d = out.view({rows, ws[0]});
  const Tensor bias_t = bias.defined() ? bias.tensor() : Tensor();
  const Tensor residual2d = residual.defined() ? residual.tensor().reshape({rows, ws[0]}) : Tensor();
  linear_forward(x.tensor(), w.tensor(), bias_t, out2d, residual2d);
  if (!needs_grad({x, w, bias, residual})) return Variable(out);
  return Variable::from_op(out, std::make_shared<LinearNode>(x, w, bias, residual));
}

}  // namespace zt::ops
