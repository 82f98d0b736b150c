// causal_attention against softmax(q k^T / sqrt(D) + causal mask) v computed in float64,
// causality, finite differences on q, k and v, errors, and the backend switch's parsing.
#include "ops/attention.h"

#include <cmath>

#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "ops/reduce.h"
#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

Tensor reference(const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t heads = q.size(0) * q.size(1), T = q.size(2), D = q.size(3);
  std::vector<double> Q = q.to_vector<double>(), K = k.to_vector<double>(), V = v.to_vector<double>(),
                      O(Q.size(), 0.0), S(T);
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t base = h * T * D;
    for (int64_t t = 0; t < T; ++t) {
      double m = -INFINITY;
      for (int64_t j = 0; j < T; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += Q[base + t * D + d] * K[base + j * D + d];
        S[j] = j <= t ? s / std::sqrt(double(D)) : -INFINITY;  // the causal mask
        m = std::max(m, S[j]);
      }
      double z = 0;
      for (int64_t j = 0; j < T; ++j) z += std::exp(S[j] - m);
      for (int64_t j = 0; j < T; ++j)
        for (int64_t d = 0; d < D; ++d) O[base + t * D + d] += std::exp(S[j] - m) / z * V[base + j * D + d];
    }
  }
  return Tensor::from_vector(O, q.shape());
}

// Odd sizes, T past one and two 64-row blocks, D = 64 as in GPT-2.
const std::vector<Shape> kShapes = {{1, 1, 1, 1}, {2, 3, 5, 4}, {1, 2, 130, 7}, {2, 1, 67, 16}, {1, 2, 64, 64}};

void check_reference(DType dtype, double tol) {
  for (const Shape& s : kShapes) {
    Tensor q = random(s, dtype), k = random(s, dtype), v = random(s, dtype);
    Variable out = ops::causal_attention(Variable(q), Variable(k), Variable(v));
    EXPECT_EQ(out.dtype(), dtype);
    EXPECT_TRUE(close_rel(out.tensor(), reference(q, k, v), tol)) << shape_str(s);
  }
}

TEST(CausalAttention, ReferenceF64) { check_reference(DType::f64, 1e-13); }
TEST(CausalAttention, ReferenceF32) { check_reference(DType::f32, 1e-5); }
TEST(CausalAttention, ReferenceBf16) { check_reference(DType::bf16, 2e-2); }

TEST(CausalAttention, FuturePositionsDoNotChangeEarlierOutputs) {
  for (DType dtype : {DType::f64, DType::f32}) {
    const Shape s{2, 2, 100, 8};
    Tensor q = random(s, dtype), k = random(s, dtype), v = random(s, dtype);
    Tensor before = ops::causal_attention(Variable(q), Variable(k), Variable(v)).tensor();
    const int64_t t = 70;  // change q, k and v at every position >= t
    for (Tensor* x : {&q, &k, &v}) {
      Tensor tail = x->slice(2, t, 100);
      tail.copy_(random(tail.shape(), dtype, 5.0));
    }
    Tensor after = ops::causal_attention(Variable(q), Variable(k), Variable(v)).tensor();
    EXPECT_TRUE(test::close_elementwise(after.slice(2, 0, t), before.slice(2, 0, t), 0, 0)) << dtype_name(dtype);
    EXPECT_FALSE(test::close_elementwise(after.slice(2, t, t + 1), before.slice(2, t, t + 1), 1e-3, 0))
        << "the changed position itself must change";
  }
}

TEST(CausalAttention, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::causal_attention(in[0], in[1], in[2]); };
  for (const Shape& s : {Shape{1, 2, 5, 3}, Shape{2, 1, 4, 2}, Shape{1, 1, 67, 2}}) {
    std::vector<Tensor> in{random(s, DType::f64), random(s, DType::f64), random(s, DType::f64)};
    EXPECT_TRUE(test::gradcheck(f, in)) << shape_str(s);
  }
  const Shape s{1, 1, 6, 3};
  std::vector<Tensor> in{random(s, DType::f64), random(s, DType::f64), random(s, DType::f64)};
  EXPECT_TRUE(test::gradcheck(f, in, {true, false, false}));
  EXPECT_TRUE(test::gradcheck(f, in, {false, true, true}));
}

TEST(CausalAttention, ShapeAndDtypeErrors) {
  auto err = [](const Shape& q, const Shape& k, const Shape& v, DType dv = DType::f32) {
    return test::error_of([&] {
      ops::causal_attention(Variable(Tensor::zeros(q, DType::f32)), Variable(Tensor::zeros(k, DType::f32)),
                            Variable(Tensor::zeros(v, dv)));
    });
  };
  EXPECT_EQ(err({1, 2, 3, 4}, {1, 2, 3, 4}, {1, 2, 5, 4}),
            "causal_attention: q [1, 2, 3, 4], k [1, 2, 3, 4], v [1, 2, 5, 4]: expected three equal [B, H, T, D] "
            "shapes");
  EXPECT_TRUE(test::contains(err({2, 3, 4}, {2, 3, 4}, {2, 3, 4}), "q [2, 3, 4], k [2, 3, 4], v [2, 3, 4]"));
  EXPECT_EQ(err({1, 2, 3, 4}, {1, 2, 3, 4}, {1, 2, 3, 4}, DType::f64),
            "causal_attention: dtype mismatch: q is f32, v is f64");
}

// causal_self_attention == split, heads, causal_attention, merge, done by hand in f64.
Tensor self_attention_reference(const Tensor& qkv, int64_t H) {
  const int64_t B = qkv.size(0), T = qkv.size(1), C = qkv.size(2) / 3, D = C / H;
  auto heads = [&](int64_t part) {
    return qkv.to(DType::f64).slice(2, part * C, (part + 1) * C).contiguous().reshape({B, T, H, D}).transpose(1, 2)
        .contiguous();
  };
  Tensor o = reference(heads(0), heads(1), heads(2));  // [B, H, T, D]
  return o.transpose(1, 2).contiguous().reshape({B, T, C});
}

TEST(CausalSelfAttention, ReferenceF64AndF32) {
  for (DType dtype : {DType::f64, DType::f32})
    for (const Shape& s : {Shape{2, 5, 12}, Shape{1, 67, 48}, Shape{2, 1, 6}}) {
      const int64_t H = s[2] == 48 ? 4 : 2;
      Tensor qkv = random(s, dtype);
      Variable out = ops::causal_self_attention(Variable(qkv), H);
      EXPECT_EQ(out.shape(), (Shape{s[0], s[1], s[2] / 3}));
      EXPECT_TRUE(close_rel(out.tensor(), self_attention_reference(qkv, H), dtype == DType::f64 ? 1e-13 : 1e-5))
          << shape_str(s) << " " << dtype_name(dtype);
    }
}

TEST(CausalSelfAttention, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::causal_self_attention(in[0], 3); };
  EXPECT_TRUE(test::gradcheck(f, {random({2, 4, 18}, DType::f64)}));
}

TEST(CausalSelfAttention, ShapeErrors) {
  auto err = [](const Shape& s, int64_t H) {
    return test::error_of([&] { ops::causal_self_attention(Variable(Tensor::zeros(s, DType::f32)), H); });
  };
  EXPECT_EQ(err({2, 3, 10}, 1), "causal_self_attention: qkv [2, 3, 10]: expected [B, T, 3C]");
  EXPECT_EQ(err({2, 3, 12}, 3), "causal_self_attention: n_head 3 does not divide C = 4");
  EXPECT_EQ(err({2, 3, 12}, 0), "causal_self_attention: n_head 0 does not divide C = 4");
}

// ZT_ATTENTION picks the first choice; ZT_FLASH_ATTENTION=0 (the older switch) means unfused
// when ZT_ATTENTION is unset; anything else is one error naming the variable.
TEST(AttentionBackend, ParsesTheEnvironment) {
  using ops::AttentionBackend;
  using ops::parse_attention_backend;
  EXPECT_EQ(parse_attention_backend(nullptr, nullptr), AttentionBackend::cudnn);
  EXPECT_EQ(parse_attention_backend("", nullptr), AttentionBackend::cudnn);
  EXPECT_EQ(parse_attention_backend("cudnn", nullptr), AttentionBackend::cudnn);
  EXPECT_EQ(parse_attention_backend("flash", nullptr), AttentionBackend::flash);
  EXPECT_EQ(parse_attention_backend("unfused", nullptr), AttentionBackend::unfused);
  EXPECT_EQ(parse_attention_backend(nullptr, "0"), AttentionBackend::unfused);
  EXPECT_EQ(parse_attention_backend(nullptr, "1"), AttentionBackend::cudnn);  // only "0" means anything
  EXPECT_EQ(parse_attention_backend("flash", "0"), AttentionBackend::flash);
  EXPECT_EQ(test::error_of([] { parse_attention_backend("cuDNN", nullptr); }),
            "ZT_ATTENTION=cuDNN: expected cudnn, flash or unfused");
  for (AttentionBackend b : {AttentionBackend::cudnn, AttentionBackend::flash, AttentionBackend::unfused})
    EXPECT_EQ(parse_attention_backend(ops::attention_backend_name(b), nullptr), b);
}

// On the CPU every backend choice runs the composite, and it is counted as such.
TEST(AttentionBackend, CpuCallsRunTheComposite) {
  const ops::AttentionCalls before = ops::attention_calls(ops::AttentionBackend::unfused);
  ops::causal_self_attention(Variable(random({1, 3, 12}, DType::f32)), 2);
  EXPECT_EQ(ops::attention_calls(ops::AttentionBackend::unfused).forward, before.forward + 1);
}

// The fused node (whose backward fails in a CPU-only build) is never made for CPU tensors,
// whichever backend is asked for first: forward and backward run the composite's nodes.
TEST(AttentionBackend, CpuNeverMakesTheFusedNode) {
  const ops::AttentionBackend chosen = ops::attention_backend();
  for (ops::AttentionBackend b : {ops::AttentionBackend::cudnn, ops::AttentionBackend::flash}) {
    ops::set_attention_backend(b);
    const ops::AttentionCalls fused_before = ops::attention_calls(b);
    Variable qkv(random({1, 3, 12}, DType::f32), /*requires_grad=*/true);
    Variable out = ops::causal_self_attention(qkv, 2);
    ASSERT_TRUE(out.grad_fn());
    EXPECT_NE(out.grad_fn()->name(), "causal_self_attention") << ops::attention_backend_name(b);
    ops::sum(out).backward();
    EXPECT_TRUE(qkv.grad().defined());
    EXPECT_EQ(ops::attention_calls(b).forward, fused_before.forward);
    EXPECT_EQ(ops::attention_calls(b).backward, fused_before.backward);
  }
  ops::set_attention_backend(chosen);
}

}  // namespace
}  // namespace zt
