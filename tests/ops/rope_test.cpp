// qk_norm_rope against a float64 loop written from the formulas, its invariants (identity at
// t = 0, rotations keep each pair's norm), finite differences on qkv and both gains, errors.
#include "ops/rope.h"

#include <gtest/gtest.h>

#include <cmath>

#include "ops/rmsnorm.h"
#include "ops/shape_ops.h"
#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

struct Config {
  int64_t B, T, H, Hkv, D;
  double theta;
  bool norm;
};

int64_t width(const Config& c) { return (c.H + 2 * c.Hkv) * c.D; }

// From the contract in ops/rope.h, in f64: per token and q/k head, RMSNorm with that kind's
// gain, then each pair (i, i + D/2) rotated by t * theta^(-2i/D); v heads copied.
Tensor reference(const Tensor& qkv, const Config& c, const Tensor& qg, const Tensor& kg, double eps) {
  const int64_t W = width(c), D = c.D;
  std::vector<double> X = qkv.to_vector<double>(), Y = X;
  std::vector<double> Q = c.norm ? qg.to_vector<double>() : std::vector<double>(),
                      K = c.norm ? kg.to_vector<double>() : std::vector<double>();
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t h = 0; h < c.H + c.Hkv; ++h) {
        const int64_t off = (b * c.T + t) * W + h * D;
        std::vector<double> v(X.begin() + off, X.begin() + off + D);
        if (c.norm) {
          double ms = 0;
          for (double e : v) ms += e * e / double(D);
          const std::vector<double>& gain = h < c.H ? Q : K;
          for (int64_t j = 0; j < D; ++j) v[j] = v[j] / std::sqrt(ms + eps) * gain[j];
        }
        if (c.theta > 0)
          for (int64_t i = 0; i < D / 2; ++i) {
            const double angle = double(t) * std::pow(c.theta, -2.0 * double(i) / double(D));
            const double x0 = v[i], x1 = v[i + D / 2];
            v[i] = x0 * std::cos(angle) - x1 * std::sin(angle);
            v[i + D / 2] = x1 * std::cos(angle) + x0 * std::sin(angle);
          }
        std::copy(v.begin(), v.end(), Y.begin() + off);
      }
  return Tensor::from_vector(Y, qkv.shape());
}

Variable run(const Tensor& qkv, const Config& c, const Tensor& qg, const Tensor& kg, double eps = 1e-6) {
  return ops::qk_norm_rope(Variable(qkv), c.H, c.Hkv, c.theta, c.norm ? Variable(qg) : Variable(),
                           c.norm ? Variable(kg) : Variable(), eps);
}

const Config kConfigs[] = {
    {2, 5, 2, 2, 8, 10000.0, true},    // MHA, both
    {2, 5, 2, 2, 8, 10000.0, false},   // RoPE alone
    {2, 5, 2, 2, 8, 0.0, true},        // QK-norm alone
    {1, 7, 4, 2, 8, 10000.0, true},    // GQA: H = 4, Hkv = 2, D = 8
    {1, 7, 4, 2, 8, 500000.0, false},  // GQA, Llama 3's theta
    {1, 3, 3, 1, 5, 0.0, true},        // odd head dim: QK-norm only
    {2, 40, 2, 1, 64, 10000.0, true},  // D past a warp's 32 lanes, positions up to 39
};

void check_reference(DType dtype, double tol) {
  for (const Config& c : kConfigs) {
    const Tensor qkv = random({c.B, c.T, width(c)}, dtype, 2.0);
    const Tensor qg = random({c.D}, dtype), kg = random({c.D}, dtype);
    Variable y = run(qkv, c, qg, kg, 1e-6);
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_EQ(y.shape(), qkv.shape());
    EXPECT_TRUE(close_rel(y.tensor(), reference(qkv, c, qg, kg, 1e-6), tol))
        << "H " << c.H << " Hkv " << c.Hkv << " D " << c.D << " theta " << c.theta << " norm " << c.norm;
  }
}

TEST(QkNormRope, ReferenceF64) { check_reference(DType::f64, 1e-13); }
TEST(QkNormRope, ReferenceF32) { check_reference(DType::f32, 1e-5); }
TEST(QkNormRope, ReferenceBf16) { check_reference(DType::bf16, 1e-2); }

// At t = 0 every angle is 0: RoPE alone returns its input exactly; v heads are always copied.
TEST(QkNormRope, IdentityAtPositionZeroAndValuesCopied) {
  const Config c{3, 4, 4, 2, 8, 10000.0, false};
  const Tensor qkv = random({c.B, c.T, width(c)}, DType::f32);
  const std::vector<float> x = qkv.to_vector<float>(), y = run(qkv, c, {}, {}).tensor().to_vector<float>();
  const int64_t W = width(c);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t j = 0; j < W; ++j) EXPECT_EQ(y[b * c.T * W + j], x[b * c.T * W + j]) << b << " " << j;
  for (int64_t tok = 0; tok < c.B * c.T; ++tok)
    for (int64_t j = (c.H + c.Hkv) * c.D; j < W; ++j) EXPECT_EQ(y[tok * W + j], x[tok * W + j]);
  // At t > 0 q and k change (else the test above could not fail).
  EXPECT_NE(y[W + 1], x[W + 1]);
}

// A rotation keeps each pair's length: |(x_i, x_{i+D/2})| is the same before and after.
TEST(QkNormRope, RotationKeepsEachPairsNorm) {
  const Config c{2, 9, 2, 1, 16, 10000.0, false};
  const Tensor qkv = random({c.B, c.T, width(c)}, DType::f64);
  const std::vector<double> x = qkv.to_vector<double>(), y = run(qkv, c, {}, {}).tensor().to_vector<double>();
  int64_t rotated = 0;
  for (int64_t tok = 0; tok < c.B * c.T; ++tok)
    for (int64_t h = 0; h < c.H + c.Hkv; ++h)
      for (int64_t i = 0; i < c.D / 2; ++i) {
        const int64_t a = tok * width(c) + h * c.D + i, b = a + c.D / 2;
        EXPECT_NEAR(std::hypot(y[a], y[b]), std::hypot(x[a], x[b]), 1e-13);
        rotated += std::abs(y[a] - x[a]) > 1e-6;
      }
  EXPECT_GT(rotated, 0);
}

// QK-norm alone is RMSNorm of every q head with q_gain and every k head with k_gain.
TEST(QkNormRope, QkNormAloneIsPerHeadRmsnorm) {
  const Config c{2, 3, 4, 2, 8, 0.0, true};
  const Tensor qkv = random({c.B, c.T, width(c)}, DType::f64), qg = random({c.D}, DType::f64),
               kg = random({c.D}, DType::f64);
  const Tensor y = run(qkv, c, qg, kg, 1e-6).tensor();
  const Tensor heads = qkv.reshape({c.B, c.T, c.H + 2 * c.Hkv, c.D});
  const Tensor yh = y.reshape({c.B, c.T, c.H + 2 * c.Hkv, c.D});
  for (int64_t h = 0; h < c.H + 2 * c.Hkv; ++h) {
    const Tensor xh = heads.select(2, h).contiguous();
    const Tensor want = h >= c.H + c.Hkv ? xh : ops::rmsnorm(Variable(xh), Variable(h < c.H ? qg : kg), 1e-6).tensor();
    EXPECT_TRUE(close_rel(yh.select(2, h).contiguous(), want, 1e-14)) << "head " << h;
  }
}

TEST(QkNormRope, GradCheck) {
  for (const Config& c : kConfigs) {
    if (c.T > 10) continue;  // the small ones
    std::vector<Tensor> in{random({c.B, c.T, width(c)}, DType::f64), random({c.D}, DType::f64),
                           random({c.D}, DType::f64)};
    auto f = [c](const std::vector<Variable>& v) {
      return ops::qk_norm_rope(v[0], c.H, c.Hkv, c.theta, c.norm ? v[1] : Variable(), c.norm ? v[2] : Variable(), 1e-6);
    };
    const std::string what = "H " + std::to_string(c.H) + " Hkv " + std::to_string(c.Hkv) + " theta " +
                             std::to_string(c.theta) + " norm " + std::to_string(c.norm);
    if (c.norm) {
      EXPECT_TRUE(test::gradcheck(f, in)) << what;
      EXPECT_TRUE(test::gradcheck(f, in, {false, true, true})) << what;
      EXPECT_TRUE(test::gradcheck(f, in, {true, false, false})) << what;
    } else {
      EXPECT_TRUE(test::gradcheck(f, in, {true, false, false})) << what;
    }
  }
}

TEST(QkNormRope, Errors) {
  auto err = [](const Shape& x, int64_t H, int64_t Hkv, double theta, const Shape& qg, const Shape& kg,
                DType gd = DType::f32, double eps = 1e-6) {
    return test::error_of([&] {
      ops::qk_norm_rope(Variable(Tensor::zeros(x, DType::f32)), H, Hkv, theta,
                        qg.empty() ? Variable() : Variable(Tensor::zeros(qg, gd)),
                        kg.empty() ? Variable() : Variable(Tensor::zeros(kg, gd)), eps);
    });
  };
  EXPECT_EQ(err({2, 40}, 2, 1, 1e4, {}, {}),
            "qk_norm_rope: qkv must be [B, T, (n_head + 2 n_kv_head) head_dim], got [2, 40]");
  EXPECT_EQ(err({1, 2, 40}, 0, 1, 1e4, {}, {}),
            "qk_norm_rope: n_head and n_kv_head must be >= 1, got n_head 0, n_kv_head 1");
  EXPECT_EQ(err({1, 2, 56}, 4, 3, 1e4, {}, {}), "qk_norm_rope: n_kv_head 3 must divide n_head 4");
  EXPECT_EQ(
      err({1, 2, 50}, 4, 2, 1e4, {}, {}),
      "qk_norm_rope: qkv [1, 2, 50]: the last dimension 50 must be n_head + 2 n_kv_head = 8 heads of head_dim >= 1");
  EXPECT_EQ(err({1, 2, 40}, 4, 2, 1e4, {}, {}),
            "qk_norm_rope: RoPE needs an even head_dim, got head_dim 5 (qkv [1, 2, 40], n_head 4, n_kv_head 2)");
  EXPECT_EQ(err({1, 2, 64}, 4, 2, -1, {}, {}), "qk_norm_rope: rope_theta must be finite and >= 0 (0: no RoPE), got -1");
  EXPECT_EQ(err({1, 2, 64}, 4, 2, 1e4, {8}, {}),
            "qk_norm_rope: q_gain and k_gain must be both defined (QK-norm) or both undefined, got q_gain defined, "
            "k_gain undefined");
  EXPECT_EQ(err({1, 2, 64}, 4, 2, 1e4, {}, {8}),
            "qk_norm_rope: q_gain and k_gain must be both defined (QK-norm) or both undefined, got q_gain undefined, "
            "k_gain defined");
  EXPECT_EQ(err({1, 2, 64}, 4, 2, 1e4, {8}, {7}), "qk_norm_rope: k_gain [7] must be [head_dim] = [8]");
  EXPECT_EQ(err({1, 2, 64}, 4, 2, 1e4, {8}, {8}, DType::f64),
            "qk_norm_rope: dtype mismatch: qkv is f32, q_gain is f64");
  EXPECT_EQ(err({1, 2, 64}, 4, 2, 1e4, {8}, {8}, DType::f32, -1), "qk_norm_rope: eps must be finite and >= 0, got -1");
  // An odd head dim is fine without RoPE.
  EXPECT_EQ(err({1, 2, 40}, 4, 2, 0, {5}, {5}), "(no error)");
}

}  // namespace
}  // namespace zt
