// GELU (tanh form) against a float64 loop, finite differences, and errors.
#include "ops/gelu.h"

#include <cmath>

#include <gtest/gtest.h>

#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

// 0.5 x (1 + tanh u); for u < 0 the same value as x e^{2u} / (1 + e^{2u}), because 1 + tanh u
// cancels there (at x = -6 it would leave the f64 reference only ~5 correct digits).
double reference_gelu(double x) {
  const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
  if (u >= 0) return 0.5 * x * (1 + std::tanh(u));
  const double e = std::exp(2 * u);
  return x * e / (1 + e);
}

Tensor reference(const Tensor& x) {
  std::vector<double> v = x.to_vector<double>();
  for (double& a : v) a = reference_gelu(a);
  return Tensor::from_vector(v, x.shape());
}

void check_reference(DType dtype, double tol) {
  for (const Shape& s : {Shape{}, Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 3, 4097}, Shape{70001}}) {
    Tensor x = random(s, dtype, 2.0);  // reaches well into both tails
    Variable y = ops::gelu(Variable(x));
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_TRUE(close_rel(y.tensor(), reference(x), tol)) << shape_str(s);
    EXPECT_TRUE(test::close_elementwise(y.tensor(), reference(x), tol, tol)) << shape_str(s);
  }
}

TEST(Gelu, ReferenceF64) { check_reference(DType::f64, 1e-14); }
TEST(Gelu, ReferenceF32) { check_reference(DType::f32, 1e-5); }
TEST(Gelu, ReferenceBf16) { check_reference(DType::bf16, 1e-2); }

TEST(Gelu, F32NegativeTailKeepsRelativeAccuracy) {
  // Deep in the negative tail y is tiny; f32 must still get it to a few ulp times the
  // condition number (~|4u|), not lose it to cancellation in 1 + tanh u.
  std::vector<float> xs;
  for (float x = -9.0f; x <= -1.0f; x += 0.125f) xs.push_back(x);
  Tensor x = Tensor::from_vector(xs, {static_cast<int64_t>(xs.size())});
  EXPECT_TRUE(test::close_elementwise(ops::gelu(Variable(x)).tensor(), reference(x), 5e-5, 0));
}

TEST(Gelu, KnownValues) {
  Tensor x = Tensor::from_vector<double>({0.0, 1.0, -1.0, 10.0, -10.0}, {5});
  std::vector<double> y = ops::gelu(Variable(x)).tensor().to_vector<double>();
  EXPECT_EQ(y[0], 0.0);
  EXPECT_NEAR(y[1], 0.8411919906082768, 1e-15);
  EXPECT_NEAR(y[2], -0.15880800939172324, 1e-15);
  EXPECT_NEAR(y[3], 10.0, 1e-15);
  EXPECT_NEAR(y[4], 0.0, 1e-15);
}

TEST(Gelu, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::gelu(in[0]); };
  EXPECT_TRUE(test::gradcheck(f, {random({3, 7}, DType::f64, 2.0)}));
}

TEST(Gelu, DtypeErrors) {
  EXPECT_EQ(test::error_of([] { ops::gelu(Variable(Tensor::zeros({2}, DType::i32))); }),
            "gelu: x must be floating (f32, bf16, f64), got i32");
}

}  // namespace
}  // namespace zt
