// softmax over the last dimension against a float64 loop, finite differences, and errors.
#include "ops/softmax.h"

#include <cmath>

#include <gtest/gtest.h>

#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

Tensor reference(const Tensor& x) {
  const int64_t C = x.shape().back(), rows = x.numel() / C;
  std::vector<double> v = x.to_vector<double>();
  for (int64_t r = 0; r < rows; ++r) {
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < C; ++j) m = std::max(m, v[r * C + j]);
    for (int64_t j = 0; j < C; ++j) s += std::exp(v[r * C + j] - m);
    for (int64_t j = 0; j < C; ++j) v[r * C + j] = std::exp(v[r * C + j] - m) / s;
  }
  return Tensor::from_vector(v, x.shape());
}

void check_reference(DType dtype, double tol) {
  for (const Shape& s : {Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 3, 33}, Shape{129, 1001}}) {
    Tensor x = random(s, dtype, 4.0);
    Variable y = ops::softmax(Variable(x));
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_TRUE(close_rel(y.tensor(), reference(x), tol)) << shape_str(s);
  }
}

TEST(Softmax, ReferenceF64) { check_reference(DType::f64, 1e-14); }
TEST(Softmax, ReferenceF32) { check_reference(DType::f32, 1e-6); }
TEST(Softmax, ReferenceBf16) { check_reference(DType::bf16, 1e-2); }

TEST(Softmax, LargeLogitsDoNotOverflow) {
  Tensor x = Tensor::from_vector<float>({1000.f, 1001.f, -1000.f}, {1, 3});
  EXPECT_TRUE(close_rel(ops::softmax(Variable(x)).tensor(), reference(x), 1e-6));
}

TEST(Softmax, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::softmax(in[0]); };
  EXPECT_TRUE(test::gradcheck(f, {random({3, 5}, DType::f64)}));
  EXPECT_TRUE(test::gradcheck(f, {random({2, 2, 3}, DType::f64)}));
  EXPECT_TRUE(test::gradcheck(f, {random({4}, DType::f64)}));
}

TEST(Softmax, ShapeAndDtypeErrors) {
  EXPECT_EQ(test::error_of([] { ops::softmax(Variable(Tensor::zeros({2}, DType::i64))); }),
            "softmax: x must be floating (f32, bf16, f64), got i64");
  EXPECT_EQ(test::error_of([] { ops::softmax(Variable(Tensor::zeros({}, DType::f32))); }),
            "softmax: x must have at least one dimension, got shape []");
}

}  // namespace
}  // namespace zt
