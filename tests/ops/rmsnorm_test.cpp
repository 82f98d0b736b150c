// rmsnorm against a float64 loop, finite differences on x and gamma, gradient folding, errors.
#include "ops/rmsnorm.h"

#include <gtest/gtest.h>

#include <cmath>

#include "framework/autograd/engine.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

Tensor reference(const Tensor& x, const Tensor& gamma, double eps) {
  const int64_t C = x.shape().back(), rows = x.numel() / C;
  std::vector<double> X = x.to_vector<double>(), G = gamma.to_vector<double>(), Y(X.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t j = 0; j < C; ++j) ms += X[r * C + j] * X[r * C + j] / C;
    for (int64_t j = 0; j < C; ++j) Y[r * C + j] = X[r * C + j] / std::sqrt(ms + eps) * G[j];
  }
  return Tensor::from_vector(Y, x.shape());
}

void check_reference(DType dtype, double tol) {
  for (const Shape& s : {Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 3, 33}, Shape{67, 768}})
    for (double eps : {1e-5, 0.1}) {
      // A common offset: RMSNorm keeps the mean (unlike LayerNorm), so it must show in y.
      Tensor x = random(s, DType::f64, 2.0);
      x.add_(Tensor::full(s, 1.5, DType::f64));
      x = x.to(dtype);
      Tensor gamma = random({s.back()}, dtype);
      Variable y = ops::rmsnorm(Variable(x), Variable(gamma), eps);
      EXPECT_EQ(y.dtype(), dtype);
      EXPECT_EQ(y.shape(), s);
      EXPECT_TRUE(close_rel(y.tensor(), reference(x, gamma, eps), tol)) << shape_str(s) << " eps " << eps;
    }
}

TEST(Rmsnorm, ReferenceF64) { check_reference(DType::f64, 1e-13); }
TEST(Rmsnorm, ReferenceF32) { check_reference(DType::f32, 1e-5); }
TEST(Rmsnorm, ReferenceBf16) { check_reference(DType::bf16, 1e-2); }

TEST(Rmsnorm, KnownValues) {
  // x = [3, 4]: mean(x^2) = 12.5; eps 0 gives x / sqrt(12.5) * gamma.
  Tensor x = Tensor::from_vector<double>({3.0, 4.0}, {2}), gamma = Tensor::from_vector<double>({1.0, 2.0}, {2});
  std::vector<double> y = ops::rmsnorm(Variable(x), Variable(gamma), 0.0).tensor().to_vector<double>();
  EXPECT_NEAR(y[0], 3 / std::sqrt(12.5), 1e-15);
  EXPECT_NEAR(y[1], 8 / std::sqrt(12.5), 1e-15);
}

TEST(Rmsnorm, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::rmsnorm(in[0], in[1], 1e-5); };
  for (const Shape& s : {Shape{3, 5}, Shape{2, 2, 4}, Shape{1}}) {
    std::vector<Tensor> in{random(s, DType::f64), random({s.back()}, DType::f64)};
    EXPECT_TRUE(test::gradcheck(f, in)) << shape_str(s);
    EXPECT_TRUE(test::gradcheck(f, in, {true, false})) << shape_str(s);
    EXPECT_TRUE(test::gradcheck(f, in, {false, true})) << shape_str(s);
  }
}

// A pre-norm residual block: x feeds the RMSNorm and the residual add; the add's gradient is
// there when the RMSNorm's backward runs, which folds it into dx. The result must equal the
// RMSNorm's own gradient plus the add's (exactly in f64), with no separate sum in the engine.
TEST(Rmsnorm, FoldsTheResidualGradientIntoDx) {
  for (DType t : {DType::f64, DType::f32, DType::bf16}) {
    const Shape s{5, 33};
    const Tensor a = random(s, DType::f64, 2.0).to(t), b = random(s, DType::f64).to(t);
    const Tensor gamma = random({33}, t), w = random(s, DType::f64).to(t);
    Variable va(a, true), vb(b, true);
    Variable x = ops::add(va, vb);
    ops::sum(ops::mul(ops::add(ops::rmsnorm(x, Variable(gamma)), x), Variable(w))).backward();
    EXPECT_EQ(last_backward_stats().folded, 1) << dtype_name(t);
    Tensor ab = a.clone();
    ab.add_(b);
    Variable x2(ab, true);
    ops::sum(ops::mul(ops::rmsnorm(x2, Variable(gamma)), Variable(w))).backward();
    const std::vector<double> got = va.grad().to_vector<double>(), rn = x2.grad().to_vector<double>(),
                              wv = w.to_vector<double>();
    ASSERT_EQ(got.size(), rn.size());
    const double tol = t == DType::f64 ? 0 : t == DType::f32 ? 1e-5 : 2e-2;
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], rn[i] + wv[i], tol * (1 + std::abs(rn[i] + wv[i]))) << dtype_name(t) << " " << i;
  }
}

TEST(Rmsnorm, ShapeAndDtypeErrors) {
  auto err = [](const Shape& x, const Shape& g, DType dg = DType::f32, double eps = 1e-5) {
    return test::error_of(
        [&] { ops::rmsnorm(Variable(Tensor::zeros(x, DType::f32)), Variable(Tensor::zeros(g, dg)), eps); });
  };
  EXPECT_EQ(err({2, 4}, {3}), "rmsnorm: x [2, 4], gamma [3]: gamma must be [4]");
  EXPECT_EQ(err({2, 4}, {2, 4}), "rmsnorm: x [2, 4], gamma [2, 4]: gamma must be [4]");
  EXPECT_EQ(err({2, 4}, {4}, DType::f64), "rmsnorm: dtype mismatch: x is f32, gamma is f64");
  EXPECT_EQ(err({2, 4}, {4}, DType::f32, -1), "rmsnorm: eps must be finite and >= 0, got -1");
  EXPECT_EQ(err({}, {1}), "rmsnorm: x must have at least one dimension, got []");
  EXPECT_EQ(test::error_of([] { ops::rmsnorm(Variable(Tensor::zeros({2}, DType::i32)), Variable()); }),
            "rmsnorm: gamma is an undefined Variable");
}

}  // namespace
}  // namespace zt
