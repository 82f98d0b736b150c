// layernorm against a float64 loop, finite differences on x, gamma and beta, and errors.
#include "ops/layernorm.h"

#include <cmath>

#include <gtest/gtest.h>

#include "framework/autograd/engine.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

Tensor reference(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  const int64_t C = x.shape().back(), rows = x.numel() / C;
  std::vector<double> X = x.to_vector<double>(), G = gamma.to_vector<double>(), B = beta.to_vector<double>(),
                      Y(X.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < C; ++j) mean += X[r * C + j] / C;
    for (int64_t j = 0; j < C; ++j) var += (X[r * C + j] - mean) * (X[r * C + j] - mean) / C;
    for (int64_t j = 0; j < C; ++j) Y[r * C + j] = (X[r * C + j] - mean) / std::sqrt(var + eps) * G[j] + B[j];
  }
  return Tensor::from_vector(Y, x.shape());
}

void check_reference(DType dtype, double tol) {
  for (const Shape& s : {Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 3, 33}, Shape{67, 768}})
    for (double eps : {1e-5, 0.1}) {
      // A large common offset tests the two-pass variance (x - mean first).
      Tensor x = random(s, DType::f64, 2.0);
      x.add_(Tensor::full(s, 3.0, DType::f64));
      x = x.to(dtype);
      Tensor gamma = random({s.back()}, dtype), beta = random({s.back()}, dtype);
      Variable y = ops::layernorm(Variable(x), Variable(gamma), Variable(beta), eps);
      EXPECT_EQ(y.dtype(), dtype);
      EXPECT_TRUE(close_rel(y.tensor(), reference(x, gamma, beta, eps), tol)) << shape_str(s) << " eps " << eps;
    }
}

TEST(Layernorm, ReferenceF64) { check_reference(DType::f64, 1e-13); }
TEST(Layernorm, ReferenceF32) { check_reference(DType::f32, 1e-5); }
TEST(Layernorm, ReferenceBf16) { check_reference(DType::bf16, 1e-2); }

TEST(Layernorm, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::layernorm(in[0], in[1], in[2], 1e-5); };
  for (const Shape& s : {Shape{3, 5}, Shape{2, 2, 4}, Shape{1}}) {
    std::vector<Tensor> in{random(s, DType::f64), random({s.back()}, DType::f64), random({s.back()}, DType::f64)};
    EXPECT_TRUE(test::gradcheck(f, in)) << shape_str(s);
    EXPECT_TRUE(test::gradcheck(f, in, {true, false, false})) << shape_str(s);
    EXPECT_TRUE(test::gradcheck(f, in, {false, true, true})) << shape_str(s);
  }
}

// In a residual block x feeds the LayerNorm and the residual add; the add's gradient is
// there when the LayerNorm's backward runs, which folds it into dx (no separate sum). The
// result must equal the LayerNorm's own gradient plus the add's, exactly in f64.
TEST(Layernorm, FoldsTheResidualGradientIntoDx) {
  for (DType t : {DType::f64, DType::f32, DType::bf16}) {
    const Shape s{5, 33};
    const Tensor a = random(s, DType::f64, 2.0).to(t), b = random(s, DType::f64).to(t);
    const Tensor gamma = random({33}, t), beta = random({33}, t), w = random(s, DType::f64).to(t);
    // Fused: x = a + b (a node, so x's gradient collects in the engine), out = LN(x) + x.
    Variable va(a, true), vb(b, true);
    Variable x = ops::add(va, vb);
    ops::sum(ops::mul(ops::add(ops::layernorm(x, Variable(gamma), Variable(beta)), x), Variable(w))).backward();
    EXPECT_EQ(last_backward_stats().folded, 1) << dtype_name(t);
    // Separate: the LayerNorm's gradient alone, then plus w (the add's gradient of x).
    Tensor ab = a.clone();
    ab.add_(b);
    Variable x2(ab, true);
    ops::sum(ops::mul(ops::layernorm(x2, Variable(gamma), Variable(beta)), Variable(w))).backward();
    const std::vector<double> got = va.grad().to_vector<double>(), ln = x2.grad().to_vector<double>(),
                              wv = w.to_vector<double>();
    ASSERT_EQ(got.size(), ln.size());
    const double tol = t == DType::f64 ? 0 : t == DType::f32 ? 1e-5 : 2e-2;
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], ln[i] + wv[i], tol * (1 + std::abs(ln[i] + wv[i]))) << dtype_name(t) << " " << i;
  }
}

TEST(Layernorm, ShapeAndDtypeErrors) {
  auto err = [](const Shape& x, const Shape& g, const Shape& b, DType dg = DType::f32, double eps = 1e-5) {
    return test::error_of([&] {
      ops::layernorm(Variable(Tensor::zeros(x, DType::f32)), Variable(Tensor::zeros(g, dg)),
                     Variable(Tensor::zeros(b, DType::f32)), eps);
    });
  };
  EXPECT_EQ(err({2, 4}, {3}, {4}), "layernorm: x [2, 4], gamma [3], beta [4]: gamma and beta must be [4]");
  EXPECT_EQ(err({2, 4}, {4}, {2, 4}), "layernorm: x [2, 4], gamma [4], beta [2, 4]: gamma and beta must be [4]");
  EXPECT_EQ(err({2, 4}, {4}, {4}, DType::f64), "layernorm: dtype mismatch: x is f32, gamma is f64");
  EXPECT_EQ(err({2, 4}, {4}, {4}, DType::f32, -1), "layernorm: eps must be finite and >= 0, got -1");
  EXPECT_EQ(err({}, {1}, {1}), "layernorm: x must have at least one dimension, got []");
}

}  // namespace
}  // namespace zt
