// dropout: the mask a seed draws, its statistics, backward through the same mask, the
// identity cases, finite differences, and errors.
#include "ops/dropout.h"

#include <cmath>

#include <gtest/gtest.h>

#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

// The documented draw: element i survives when the i-th uniform() of the generator is >= p.
Tensor reference(const Tensor& x, double p, uint64_t seed) {
  Generator gen(seed);
  std::vector<double> v = x.to_vector<double>();
  for (double& a : v) a = gen.uniform() >= p ? a / (1 - p) : 0.0;
  return Tensor::from_vector(v, x.shape());
}

TEST(Dropout, ReferenceF64) {
  for (double p : {0.1, 0.5, 0.9})
    for (const Shape& s : {Shape{1}, Shape{7}, Shape{3, 5}, Shape{33, 1025}}) {
      Tensor x = random(s, DType::f64);
      Generator gen(42);
      Variable y = ops::dropout(Variable(x), p, gen);
      EXPECT_TRUE(close_rel(y.tensor(), reference(x, p, 42), 1e-15)) << "p=" << p << " " << shape_str(s);
    }
}

TEST(Dropout, ReferenceF32AndBf16) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor x = random({17, 300}, dtype);
    Generator gen(7);
    Variable y = ops::dropout(Variable(x), 0.25, gen);
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_TRUE(close_rel(y.tensor(), reference(x, 0.25, 7), dtype == DType::f32 ? 1e-7 : 4e-3));
  }
}

TEST(Dropout, MaskStatistics) {
  const int64_t n = 200000;
  for (double p : {0.1, 0.5}) {
    Tensor x = Tensor::full({n}, 1.0, DType::f32);
    Generator gen(123);
    std::vector<double> y = ops::dropout(Variable(x), p, gen).tensor().to_vector<double>();
    int64_t dropped = 0;
    for (double v : y) {
      if (v == 0) ++dropped;
      else EXPECT_NEAR(v, 1 / (1 - p), 1e-6);
    }
    const double sigma = std::sqrt(n * p * (1 - p));
    EXPECT_NEAR(double(dropped), n * p, 5 * sigma) << "p=" << p;
  }
  // Fresh draws on each call; the same seed repeats the mask.
  Tensor x = Tensor::full({1000}, 1.0, DType::f64);
  Generator g1(5), g2(5);
  Tensor a = ops::dropout(Variable(x), 0.5, g1).tensor(), b = ops::dropout(Variable(x), 0.5, g1).tensor();
  EXPECT_FALSE(test::close_elementwise(a, b, 0, 0));
  EXPECT_TRUE(test::close_elementwise(ops::dropout(Variable(x), 0.5, g2).tensor(), a, 0, 0));
}

TEST(Dropout, BackwardUsesTheForwardMask) {
  Tensor x = random({50, 41}, DType::f64);
  Variable xv(x, true);
  Generator gen(9);
  Variable y = ops::dropout(xv, 0.4, gen);
  Tensor g = random(x.shape(), DType::f64);
  y.backward(g);
  std::vector<double> X = x.to_vector<double>(), Y = y.tensor().to_vector<double>(), G = g.to_vector<double>(),
                      dX = xv.grad().to_vector<double>();
  for (size_t i = 0; i < X.size(); ++i) {
    const bool kept = Y[i] != 0;  // x is never exactly 0 here
    EXPECT_DOUBLE_EQ(dX[i], kept ? G[i] / 0.6 : 0.0) << i;
  }
}

TEST(Dropout, IdentityWhenPIsZeroOrNotTraining) {
  Variable x(random({4, 5}, DType::f32), true);
  Generator gen(1);
  const uint64_t next = Generator(gen).next_u64();
  Variable a = ops::dropout(x, 0.0, gen), b = ops::dropout(x, 0.5, gen, /*training=*/false);
  EXPECT_EQ(a.impl(), x.impl()) << "p == 0 returns the input itself";
  EXPECT_EQ(b.impl(), x.impl()) << "eval mode returns the input itself";
  EXPECT_EQ(gen.next_u64(), next) << "identity draws no random numbers";
}

TEST(Dropout, PEqualOneDropsEverything) {
  Variable x(random({10}, DType::f64), true);
  Generator gen(2);
  Variable y = ops::dropout(x, 1.0, gen);
  y.backward(random({10}, DType::f64));
  for (double v : y.tensor().to_vector<double>()) EXPECT_EQ(v, 0.0);
  for (double v : x.grad().to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(Dropout, GradCheck) {
  // A fresh generator with a fixed seed per call, so every evaluation uses one mask.
  auto f = [](const std::vector<Variable>& in) {
    Generator gen(77);
    return ops::dropout(in[0], 0.3, gen);
  };
  EXPECT_TRUE(test::gradcheck(f, {random({4, 6}, DType::f64)}));
  test::expect_dtype_matches_f64(f, {random({33, 65}, DType::f64)}, DType::f32, 1e-7);
}

TEST(Dropout, Errors) {
  Generator gen(0);
  Variable x(Tensor::zeros({2}, DType::f32));
  EXPECT_EQ(test::error_of([&] { ops::dropout(x, 1.5, gen); }), "dropout: p must be in [0, 1], got 1.5");
  EXPECT_EQ(test::error_of([&] { ops::dropout(x, -0.1, gen); }), "dropout: p must be in [0, 1], got -0.1");
  EXPECT_EQ(test::error_of([&] { ops::dropout(x, NAN, gen); }), "dropout: p must be in [0, 1], got nan");
  EXPECT_EQ(test::error_of([&] { ops::dropout(Variable(Tensor::zeros({2}, DType::i64)), 0.1, gen); }),
            "dropout: x must be floating (f32, bf16, f64), got i64");
}

TEST(Dropout, CudaTensorsRaiseNotImplementedYet) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  Generator gen(0);
  Variable x(Tensor::zeros({2}, DType::f32, Device::cuda()));
  EXPECT_EQ(ops::dropout(x, 0.0, gen).impl(), x.impl()) << "the identity case works on any device";
  EXPECT_EQ(test::error_of([&] { ops::dropout(x, 0.1, gen); }), "dropout: not implemented on CUDA yet");
}

}  // namespace
}  // namespace zt
