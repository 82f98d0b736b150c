// The MLP op on the CPU: against a float64 loop (linear, tanh GELU, linear), finite
// differences with and without biases, and argument errors. The CUDA path (GELU on cuBLASLt
// epilogues) is compared with this one in backend_ops_test.cpp.
#include "ops/mlp.h"

#include <cmath>

#include <gtest/gtest.h>

#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::random;

// y[r] = w_proj gelu(w_fc x[r] + b_fc) + b_proj, row by row in f64.
Tensor reference(const Tensor& x, const Tensor& w_fc, const Tensor& b_fc, const Tensor& w_proj, const Tensor& b_proj) {
  const int64_t in = w_fc.size(1), hidden = w_fc.size(0), out = w_proj.size(0), rows = x.numel() / in;
  const std::vector<double> xv = x.to_vector<double>(), f = w_fc.to_vector<double>(), p = w_proj.to_vector<double>();
  const std::vector<double> bf = b_fc.defined() ? b_fc.to_vector<double>() : std::vector<double>(hidden, 0.0);
  const std::vector<double> bp = b_proj.defined() ? b_proj.to_vector<double>() : std::vector<double>(out, 0.0);
  std::vector<double> y(static_cast<size_t>(rows * out)), a(static_cast<size_t>(hidden));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < hidden; ++h) {
      double s = bf[h];
      for (int64_t i = 0; i < in; ++i) s += f[h * in + i] * xv[r * in + i];
      a[h] = 0.5 * s * (1 + std::tanh(std::sqrt(2 / M_PI) * (s + 0.044715 * s * s * s)));
    }
    for (int64_t o = 0; o < out; ++o) {
      double s = bp[o];
      for (int64_t h = 0; h < hidden; ++h) s += p[o * hidden + h] * a[h];
      y[r * out + o] = s;
    }
  }
  Shape shape = x.shape();
  shape.back() = out;
  return Tensor::from_vector(y, shape);
}

Variable run(const std::vector<Variable>& v) { return ops::mlp(v[0], v[1], v[2], v[3], v[4]); }

TEST(Mlp, ReferenceF64F32Bf16) {
  const Tensor x = random({2, 5, 12}, DType::f64), w_fc = random({40, 12}, DType::f64, 0.4),
               b_fc = random({40}, DType::f64), w_proj = random({7, 40}, DType::f64, 0.3),
               b_proj = random({7}, DType::f64);
  const Tensor want = reference(x, w_fc, b_fc, w_proj, b_proj);
  for (auto [dtype, tol] : {std::pair{DType::f64, 1e-13}, {DType::f32, 1e-5}, {DType::bf16, 2e-2}}) {
    Variable y = ops::mlp(Variable(x.to(dtype)), Variable(w_fc.to(dtype)), Variable(b_fc.to(dtype)),
                          Variable(w_proj.to(dtype)), Variable(b_proj.to(dtype)));
    EXPECT_EQ(y.shape(), (Shape{2, 5, 7}));
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_TRUE(test::close_rel(y.tensor(), want, tol)) << dtype_name(dtype);
  }
  Variable no_bias = ops::mlp(Variable(x), Variable(w_fc), Variable(), Variable(w_proj), Variable());
  EXPECT_TRUE(test::close_rel(no_bias.tensor(), reference(x, w_fc, Tensor(), w_proj, Tensor()), 1e-13));
}

// With a residual: the reference plus the residual; its gradient is the output's, exactly.
TEST(Mlp, ResidualIsAddedAndGetsTheOutputGradient) {
  const Tensor x = random({2, 5, 12}, DType::f64), w_fc = random({40, 12}, DType::f64, 0.4),
               b_fc = random({40}, DType::f64), w_proj = random({7, 40}, DType::f64, 0.3),
               b_proj = random({7}, DType::f64), r = random({2, 5, 7}, DType::f64), gy = random({2, 5, 7}, DType::f64);
  Tensor want = reference(x, w_fc, b_fc, w_proj, b_proj);
  want.add_(r);
  for (auto [dtype, tol] : {std::pair{DType::f64, 1e-13}, {DType::f32, 1e-5}, {DType::bf16, 2e-2}}) {
    Variable vr(r.to(dtype), true);
    Variable y = ops::mlp(Variable(x.to(dtype), true), Variable(w_fc.to(dtype)), Variable(b_fc.to(dtype)),
                          Variable(w_proj.to(dtype)), Variable(b_proj.to(dtype)), vr);
    EXPECT_EQ(y.shape(), (Shape{2, 5, 7}));
    EXPECT_TRUE(test::close_rel(y.tensor(), want, tol)) << dtype_name(dtype);
    y.backward(gy.to(dtype));
    ASSERT_TRUE(vr.has_grad());
    EXPECT_EQ(vr.grad().to_vector<double>(), gy.to(dtype).to_vector<double>()) << dtype_name(dtype);
  }
  auto with_residual = [](const std::vector<Variable>& v) { return ops::mlp(v[0], v[1], v[2], v[3], v[4], v[5]); };
  EXPECT_TRUE(test::gradcheck(with_residual, {random({3, 4}, DType::f64), random({8, 4}, DType::f64, 0.5),
                                              random({8}, DType::f64), random({5, 8}, DType::f64, 0.5),
                                              random({5}, DType::f64), random({3, 5}, DType::f64)}));
}

TEST(Mlp, GradCheck) {
  EXPECT_TRUE(test::gradcheck(run, {random({3, 4}, DType::f64), random({8, 4}, DType::f64, 0.5),
                                    random({8}, DType::f64), random({5, 8}, DType::f64, 0.5), random({5}, DType::f64)}));
  auto no_bias = [](const std::vector<Variable>& v) { return ops::mlp(v[0], v[1], Variable(), v[2], Variable()); };
  EXPECT_TRUE(test::gradcheck(no_bias, {random({2, 3, 4}, DType::f64), random({6, 4}, DType::f64, 0.5),
                                        random({3, 6}, DType::f64, 0.5)}));
}

TEST(Mlp, ArgumentErrorsNameTheOperands) {
  auto v = [](const Shape& s, DType t = DType::f32) { return Variable(Tensor::zeros(s, t)); };
  EXPECT_TRUE(test::contains(test::error_of([&] { ops::mlp(v({2, 4}), v({8, 5}), v({8}), v({4, 8}), v({4})); }),
                             "mlp: x [2, 4] and w_fc [8, 5]"));
  EXPECT_TRUE(test::contains(test::error_of([&] { ops::mlp(v({2, 4}), v({8, 4}), v({8}), v({4, 6}), v({4})); }),
                             "mlp: w_fc [8, 4] and w_proj [4, 6]"));
  EXPECT_TRUE(test::contains(test::error_of([&] { ops::mlp(v({2, 4}), v({8, 4}), v({7}), v({4, 8}), v({4})); }),
                             "mlp: b_fc [7]: expected [8]"));
  EXPECT_TRUE(test::contains(
      test::error_of([&] { ops::mlp(v({2, 4}), v({8, 4}), v({8}), v({4, 8}, DType::f64), v({4})); }),
      "mlp: dtype mismatch: x is f32, w_proj is f64"));
  EXPECT_TRUE(test::contains(test::error_of([&] { ops::mlp(v({2, 4}), Variable(), v({8}), v({4, 8}), v({4})); }),
                             "mlp: w_fc is an undefined Variable"));
  EXPECT_EQ(test::error_of([&] { ops::mlp(v({2, 4}), v({8, 4}), v({8}), v({3, 8}), v({3}), v({2, 4})); }),
            "mlp: residual [2, 4] must have the output's shape [2, 3]");
  EXPECT_EQ(test::error_of([&] { ops::mlp(v({2, 4}), v({8, 4}), v({8}), v({3, 8}), v({3}), v({2, 3}, DType::bf16)); }),
            "mlp: dtype mismatch: x is f32, residual is bf16");
}

}  // namespace
}  // namespace zt
