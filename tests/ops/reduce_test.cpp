// sum and mean against float64 loops, finite differences, and their error messages.
#include "ops/reduce.h"

#include <cmath>

#include <gtest/gtest.h>

#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

double reference_sum(const Tensor& x) {
  double s = 0;
  for (double v : x.to_vector<double>()) s += v;
  return s;
}

const std::vector<Shape> kShapes = {{}, {1}, {7}, {3, 5}, {2, 3, 7}, {1000, 333}};

TEST(Sum, ReferenceF64) {
  for (const Shape& s : kShapes) {
    Tensor x = random(s, DType::f64);
    Variable y = ops::sum(Variable(x));
    EXPECT_EQ(y.shape(), Shape{});
    EXPECT_NEAR(y.tensor().item(), reference_sum(x), 1e-12 * std::sqrt(double(x.numel()))) << shape_str(s);
  }
}

TEST(Sum, ReferenceF32) {
  for (const Shape& s : kShapes) {
    Tensor x = random(s, DType::f32);
    Variable y = ops::sum(Variable(x));
    EXPECT_EQ(y.dtype(), DType::f32);
    EXPECT_NEAR(y.tensor().item(), reference_sum(x), 1e-5 * std::sqrt(double(x.numel()))) << shape_str(s);
  }
}

TEST(Mean, ReferenceF64) {
  for (const Shape& s : kShapes) {
    Tensor x = random(s, DType::f64);
    EXPECT_NEAR(ops::mean(Variable(x)).tensor().item(), reference_sum(x) / x.numel(), 1e-14) << shape_str(s);
  }
}

TEST(Mean, ReferenceF32AndBf16) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor x = random({333, 101}, dtype, 1.0);
    Variable y = ops::mean(Variable(x));
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_NEAR(y.tensor().item(), reference_sum(x) / x.numel(), dtype == DType::f32 ? 1e-6 : 1e-3);
  }
}

TEST(Mean, OfNoElementsIsNaN) { EXPECT_TRUE(std::isnan(ops::mean(Variable(Tensor::zeros({0, 3}, DType::f32))).tensor().item())); }

TEST(Sum, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::sum(in[0]); };
  EXPECT_TRUE(test::gradcheck(f, {random({3, 4}, DType::f64)}));
  EXPECT_TRUE(test::gradcheck(f, {random({}, DType::f64)}));
}

TEST(Mean, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::mean(in[0]); };
  EXPECT_TRUE(test::gradcheck(f, {random({3, 4}, DType::f64)}));
  EXPECT_TRUE(test::gradcheck(f, {random({2, 1, 5}, DType::f64)}));
}

TEST(Reduce, LossBackwardWithHostSeed) {
  // The common call: a scalar loss, backward() without a gradient.
  Variable x(random({4, 5}, DType::f64), true);
  ops::mean(x).backward(2.0);
  for (double g : x.grad().to_vector<double>()) EXPECT_DOUBLE_EQ(g, 2.0 / 20);
}

TEST(Reduce, DtypeErrors) {
  EXPECT_EQ(test::error_of([] { ops::sum(Variable(Tensor::zeros({2}, DType::i64))); }),
            "sum: x must be floating (f32, bf16, f64), got i64");
  EXPECT_EQ(test::error_of([] { ops::mean(Variable(Tensor::zeros({2}, DType::i32))); }),
            "mean: x must be floating (f32, bf16, f64), got i32");
  EXPECT_EQ(test::error_of([] { ops::sum(Variable()); }), "sum: x is an undefined Variable");
}

}  // namespace
}  // namespace zt
