// add/sub/mul (equal shapes and row broadcasting of b) and scale against float64 loops,
// finite differences, and their error messages.
#include "ops/elementwise.h"

#include <gtest/gtest.h>

#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

enum class Kind { add, sub, mul };

Variable apply(Kind k, const Variable& a, const Variable& b) {
  switch (k) {
    case Kind::add: return ops::add(a, b);
    case Kind::sub: return ops::sub(a, b);
    case Kind::mul: return ops::mul(a, b);
  }
  return {};
}

// out[i] = a[i] (op) b[i mod |b|]: b repeats over a's leading dimensions.
Tensor reference(Kind k, const Tensor& a, const Tensor& b) {
  std::vector<double> A = a.to_vector<double>(), B = b.to_vector<double>(), out(A.size());
  for (size_t i = 0; i < A.size(); ++i) {
    const double y = B[i % B.size()];
    out[i] = k == Kind::add ? A[i] + y : k == Kind::sub ? A[i] - y : A[i] * y;
  }
  return Tensor::from_vector(out, a.shape());
}

// (a shape, b shape) pairs: equal shapes, row broadcasts, odd sizes, one large enough to thread.
const std::vector<std::pair<Shape, Shape>> kShapes = {
    {{1}, {1}}, {{7}, {7}}, {{3, 5}, {3, 5}}, {{3, 5}, {5}}, {{2, 3, 7}, {3, 7}}, {{2, 3, 7}, {7}},
    {{4, 1}, {1}}, {{33, 1031}, {1031}}, {{65, 1030}, {65, 1030}}, {{2, 3}, {}}};

void check_reference(Kind k, DType dtype, double tol) {
  for (const auto& [as, bs] : kShapes) {
    Tensor a = random(as, dtype), b = random(bs, dtype);
    Variable out = apply(k, Variable(a), Variable(b));
    EXPECT_EQ(out.dtype(), dtype);
    EXPECT_TRUE(close_rel(out.tensor(), reference(k, a, b), tol)) << shape_str(as) << " and " << shape_str(bs);
  }
}

void check_grad(Kind k) {
  auto f = [k](const std::vector<Variable>& in) { return apply(k, in[0], in[1]); };
  for (const auto& [as, bs] : {std::pair<Shape, Shape>{{2, 3}, {2, 3}}, {{2, 3, 4}, {3, 4}}, {{3, 4}, {4}}, {{3}, {}}}) {
    EXPECT_TRUE(test::gradcheck(f, {random(as, DType::f64), random(bs, DType::f64)})) << shape_str(as) << shape_str(bs);
    EXPECT_TRUE(test::gradcheck(f, {random(as, DType::f64), random(bs, DType::f64)}, {false, true}));
    EXPECT_TRUE(test::gradcheck(f, {random(as, DType::f64), random(bs, DType::f64)}, {true, false}));
  }
}

TEST(Add, ReferenceF64) { check_reference(Kind::add, DType::f64, 1e-15); }
TEST(Add, ReferenceF32) { check_reference(Kind::add, DType::f32, 1e-6); }
TEST(Add, GradCheck) { check_grad(Kind::add); }
TEST(Sub, ReferenceF64) { check_reference(Kind::sub, DType::f64, 1e-15); }
TEST(Sub, ReferenceF32) { check_reference(Kind::sub, DType::f32, 1e-6); }
TEST(Sub, GradCheck) { check_grad(Kind::sub); }
TEST(Mul, ReferenceF64) { check_reference(Kind::mul, DType::f64, 1e-15); }
TEST(Mul, ReferenceF32) { check_reference(Kind::mul, DType::f32, 1e-6); }
TEST(Mul, GradCheck) { check_grad(Kind::mul); }

TEST(Elementwise, Bf16ComputesInF32AndRoundsOnce) {
  Tensor a = random({5, 9}, DType::bf16), b = random({9}, DType::bf16);
  for (Kind k : {Kind::add, Kind::sub, Kind::mul}) {
    Variable out = apply(k, Variable(a), Variable(b));
    EXPECT_EQ(out.dtype(), DType::bf16);
    EXPECT_TRUE(close_rel(out.tensor(), reference(k, a, b), 4e-3));
  }
}

TEST(Scale, ReferenceF64) {
  for (const Shape& s : {Shape{}, Shape{1}, Shape{3, 5}, Shape{129, 257}}) {
    Tensor a = random(s, DType::f64);
    std::vector<double> want = a.to_vector<double>();
    for (double& v : want) v *= -2.75;
    EXPECT_TRUE(close_rel(ops::scale(Variable(a), -2.75).tensor(), Tensor::from_vector(want, s), 1e-15));
  }
}

TEST(Scale, ReferenceF32) {
  Tensor a = random({129, 257}, DType::f32);
  std::vector<double> want = a.to_vector<double>();
  for (double& v : want) v *= 0.3;
  EXPECT_TRUE(close_rel(ops::scale(Variable(a), 0.3).tensor(), Tensor::from_vector(want, a.shape()), 1e-7));
}

TEST(Scale, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::scale(in[0], 1.7); };
  EXPECT_TRUE(test::gradcheck(f, {random({3, 4}, DType::f64)}));
}

TEST(Elementwise, UsingOneVariableTwiceAccumulates) {
  // mul(x, x) has two edges to x: the gradient 2x must arrive as the sum of both.
  auto f = [](const std::vector<Variable>& in) { return ops::mul(in[0], in[0]); };
  EXPECT_TRUE(test::gradcheck(f, {random({4, 3}, DType::f64)}));
  auto g = [](const std::vector<Variable>& in) { return ops::add(in[0], in[0]); };
  EXPECT_TRUE(test::gradcheck(g, {random({4, 3}, DType::f64)}));
}

TEST(Elementwise, ShapeAndDtypeErrorsNameBoth) {
  auto err = [](Kind k, const Shape& as, const Shape& bs, DType da = DType::f32, DType db = DType::f32) {
    return test::error_of([&] { apply(k, Variable(Tensor::zeros(as, da)), Variable(Tensor::zeros(bs, db))); });
  };
  EXPECT_EQ(err(Kind::add, {2, 3}, {4}),
            "add: shapes [2, 3] and [4] do not match: b must have a's shape or a trailing part of it (a row "
            "broadcast)");
  EXPECT_TRUE(test::contains(err(Kind::sub, {3}, {2, 3}), "sub: shapes [3] and [2, 3] do not match"));
  EXPECT_TRUE(test::contains(err(Kind::mul, {2, 3}, {2, 1}), "mul: shapes [2, 3] and [2, 1] do not match"));
  EXPECT_EQ(err(Kind::add, {2, 3}, {3}, DType::f32, DType::f64), "add: dtype mismatch: a is f32, b is f64");
  EXPECT_EQ(err(Kind::mul, {2, 3}, {3}, DType::bf16, DType::f32), "mul: dtype mismatch: a is bf16, b is f32");
  EXPECT_EQ(err(Kind::add, {2, 3}, {3}, DType::i32, DType::i32), "add: a must be floating (f32, bf16, f64), got i32");
  EXPECT_EQ(test::error_of([] { ops::scale(Variable(Tensor::zeros({2}, DType::i64)), 2); }),
            "scale: a must be floating (f32, bf16, f64), got i64");
  EXPECT_EQ(test::error_of([] { ops::add(Variable(), Variable(Tensor::zeros({2}, DType::f32))); }),
            "add: a is an undefined Variable");
}

}  // namespace
}  // namespace zt
