// SwiGLU against a float64 loop, finite differences, and errors.
#include "ops/swiglu.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

Tensor reference(const Tensor& x) {
  const int64_t F = x.shape().back() / 2, rows = F == 0 ? 0 : x.numel() / (2 * F);
  std::vector<double> X = x.to_vector<double>(), Y(static_cast<size_t>(rows * F));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < F; ++j) {
      const double a = X[r * 2 * F + j], b = X[r * 2 * F + F + j];
      Y[r * F + j] = a / (1 + std::exp(-a)) * b;
    }
  Shape s = x.shape();
  s.back() = F;
  return Tensor::from_vector(Y, s);
}

void check_reference(DType dtype, double tol) {
  for (const Shape& s : {Shape{2}, Shape{14}, Shape{3, 10}, Shape{2, 3, 66}, Shape{5, 4096}}) {
    Tensor x = random(s, dtype, 3.0);  // into both tails of the sigmoid
    Variable y = ops::swiglu(Variable(x));
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_TRUE(close_rel(y.tensor(), reference(x), tol)) << shape_str(s);
    EXPECT_TRUE(test::close_elementwise(y.tensor(), reference(x), tol, tol)) << shape_str(s);
  }
}

TEST(Swiglu, ReferenceF64) { check_reference(DType::f64, 1e-14); }
TEST(Swiglu, ReferenceF32) { check_reference(DType::f32, 1e-5); }
TEST(Swiglu, ReferenceBf16) { check_reference(DType::bf16, 1e-2); }

TEST(Swiglu, KnownValuesAndHalves) {
  // [a | b] = [0, 1, -100 | 5, 2, 3]: silu(0) = 0, silu(1) = 1 / (1 + e^-1), silu(-100) ~ -3.7e-42.
  Tensor x = Tensor::from_vector<double>({0.0, 1.0, -100.0, 5.0, 2.0, 3.0}, {1, 6});
  Variable y = ops::swiglu(Variable(x));
  EXPECT_EQ(y.shape(), (Shape{1, 3}));
  std::vector<double> v = y.tensor().to_vector<double>();
  EXPECT_EQ(v[0], 0.0);
  EXPECT_NEAR(v[1], 2.0 / (1 + std::exp(-1.0)), 1e-15);
  EXPECT_NEAR(v[2], 0.0, 1e-40);
  // Large positive a: silu(a) = a, the gradient of a is b, of b is a.
  Variable big(Tensor::from_vector<double>({40.0, 0.5}, {2}), true);
  ops::swiglu(big).backward();
  EXPECT_NEAR(big.grad().to_vector<double>()[0], 0.5, 1e-12);
  EXPECT_NEAR(big.grad().to_vector<double>()[1], 40.0, 1e-12);
}

TEST(Swiglu, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::swiglu(in[0]); };
  EXPECT_TRUE(test::gradcheck(f, {random({3, 14}, DType::f64, 2.0)}));
  EXPECT_TRUE(test::gradcheck(f, {random({2, 2, 6}, DType::f64, 2.0)}));
}

TEST(Swiglu, Errors) {
  EXPECT_EQ(test::error_of([] {
              ops::swiglu(Variable(Tensor::zeros({2, 5}, DType::f32)));
            }),
            "swiglu: gate_up [2, 5] must have an even last dimension (gate and up halves)");
  EXPECT_EQ(test::error_of([] { ops::swiglu(Variable(Tensor::zeros({}, DType::f32))); }),
            "swiglu: gate_up [] must have an even last dimension (gate and up halves)");
  EXPECT_EQ(test::error_of([] { ops::swiglu(Variable(Tensor::zeros({2}, DType::i64))); }),
            "swiglu: gate_up must be floating (f32, bf16, f64), got i64");
  EXPECT_EQ(test::error_of([] { ops::swiglu(Variable()); }), "swiglu: gate_up is an undefined Variable");
}

}  // namespace
}  // namespace zt
