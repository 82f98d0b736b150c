// causal_attention against softmax(q k^T / sqrt(D) + causal mask) v computed in float64,
// causality, finite differences on q, k and v, errors, and the backend switch's parsing.
#include "ops/attention.h"

#include <cmath>

#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "ops/reduce.h"
#include "ops/shape_ops.h"
#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

// q [B, H, T, D], k and v [B, Hkv, T, D]: for each batch and query head h, with its key/value
// head h / (H / Hkv): scores, causal mask, softmax, weighted sum, one element at a time.
Tensor reference(const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t B = q.size(0), H = q.size(1), Hkv = k.size(1), T = q.size(2), D = q.size(3);
  std::vector<double> Q = q.to_vector<double>(), K = k.to_vector<double>(), V = v.to_vector<double>(),
                      O(Q.size(), 0.0), S(T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t base = (b * H + h) * T * D, kv = (b * Hkv + h / (H / Hkv)) * T * D;
      for (int64_t t = 0; t < T; ++t) {
        double m = -INFINITY;
        for (int64_t j = 0; j < T; ++j) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += Q[base + t * D + d] * K[kv + j * D + d];
          S[j] = j <= t ? s / std::sqrt(double(D)) : -INFINITY;  // the causal mask
          m = std::max(m, S[j]);
        }
        double z = 0;
        for (int64_t j = 0; j < T; ++j) z += std::exp(S[j] - m);
        for (int64_t j = 0; j < T; ++j)
          for (int64_t d = 0; d < D; ++d) O[base + t * D + d] += std::exp(S[j] - m) / z * V[kv + j * D + d];
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

// Grouped-query heads: k and v with Hkv heads, Hkv dividing H (multi-query Hkv = 1, H / 2, and
// H / 3), T past one and two 64-row blocks.
struct Grouped {
  Shape q;
  int64_t Hkv;
  Shape kv() const { return {q[0], Hkv, q[2], q[3]}; }
};
const std::vector<Grouped> kGrouped = {{{2, 4, 5, 4}, 1}, {{1, 4, 130, 7}, 2}, {{2, 6, 67, 16}, 2}, {{1, 2, 64, 64}, 1}};

void check_grouped_reference(DType dtype, double tol) {
  for (const Grouped& c : kGrouped) {
    Tensor q = random(c.q, dtype), k = random(c.kv(), dtype), v = random(c.kv(), dtype);
    Variable out = ops::causal_attention(Variable(q), Variable(k), Variable(v));
    EXPECT_EQ(out.shape(), c.q);
    EXPECT_TRUE(close_rel(out.tensor(), reference(q, k, v), tol)) << shape_str(c.q) << " Hkv " << c.Hkv;
  }
}

TEST(CausalAttention, GroupedReferenceF64) { check_grouped_reference(DType::f64, 1e-13); }
TEST(CausalAttention, GroupedReferenceF32) { check_grouped_reference(DType::f32, 1e-5); }
TEST(CausalAttention, GroupedReferenceBf16) { check_grouped_reference(DType::bf16, 2e-2); }

// [B, Hkv, T, D] -> [B, H, T, D], each head repeated H / Hkv times in place (query head h gets
// head h / (H / Hkv)), by index loops.
Tensor repeat_heads(const Tensor& x, int64_t H) {
  const int64_t B = x.size(0), Hkv = x.size(1), TD = x.size(2) * x.size(3);
  const std::vector<double> in = x.to_vector<double>();
  std::vector<double> out(static_cast<size_t>(B * H * TD));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < TD; ++i) out[(b * H + h) * TD + i] = in[(b * Hkv + h / (H / Hkv)) * TD + i];
  return Tensor::from_vector(out, {B, H, x.size(2), x.size(3)});
}

// Grouped heads are plain multi-head attention on k and v repeated per query head: the output
// and d q are identical on the CPU (the same per-head computation), and the gradient of a
// shared key/value head is the sum of its repeated copies' gradients (over its group).
TEST(CausalAttention, GroupedEqualsRepeatedHeads) {
  for (const Grouped& c : kGrouped) {
    const int64_t H = c.q[1], G = H / c.Hkv;
    Variable q(random(c.q, DType::f64), true), k(random(c.kv(), DType::f64), true), v(random(c.kv(), DType::f64), true);
    Variable kr(repeat_heads(k.tensor(), H), true), vr(repeat_heads(v.tensor(), H), true);
    Variable grouped = ops::causal_attention(q, k, v);
    Variable qr(q.tensor(), true);
    Variable plain = ops::causal_attention(qr, kr, vr);
    EXPECT_TRUE(test::close_elementwise(grouped.tensor(), plain.tensor(), 0, 0)) << shape_str(c.q);
    const Tensor dout = random(c.q, DType::f64);
    grouped.backward(dout);
    plain.backward(dout);
    EXPECT_TRUE(test::close_elementwise(q.grad(), qr.grad(), 0, 0)) << shape_str(c.q);
    for (auto [shared, copies] : {std::pair{&k, &kr}, std::pair{&v, &vr}}) {
      // Sum the copies' gradients over each group, by index loops.
      const std::vector<double> g = copies->grad().to_vector<double>();
      const int64_t B = c.q[0], TD = c.q[2] * c.q[3];
      std::vector<double> sum(static_cast<size_t>(B * c.Hkv * TD), 0.0);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < TD; ++i) sum[(b * c.Hkv + h / G) * TD + i] += g[(b * H + h) * TD + i];
      EXPECT_EQ(shared->grad().shape(), c.kv());
      EXPECT_TRUE(close_rel(shared->grad(), Tensor::from_vector(sum, c.kv()), 1e-13)) << shape_str(c.q);
    }
  }
}

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

TEST(CausalAttention, GroupedGradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::causal_attention(in[0], in[1], in[2]); };
  // Multi-query (Hkv = 1), H / 2 over two batches, and a group past a 64-row block.
  for (const Grouped& c : {Grouped{{1, 4, 5, 3}, 1}, Grouped{{2, 4, 4, 2}, 2}, Grouped{{1, 2, 66, 2}, 1}}) {
    std::vector<Tensor> in{random(c.q, DType::f64), random(c.kv(), DType::f64), random(c.kv(), DType::f64)};
    EXPECT_TRUE(test::gradcheck(f, in)) << shape_str(c.q) << " Hkv " << c.Hkv;
  }
}

TEST(CausalAttention, ShapeAndDtypeErrors) {
  auto err = [](const Shape& q, const Shape& k, const Shape& v, DType dv = DType::f32) {
    return test::error_of([&] {
      ops::causal_attention(Variable(Tensor::zeros(q, DType::f32)), Variable(Tensor::zeros(k, DType::f32)),
                            Variable(Tensor::zeros(v, dv)));
    });
  };
  EXPECT_EQ(err({1, 2, 3, 4}, {1, 2, 3, 4}, {1, 2, 5, 4}),
            "causal_attention: q [1, 2, 3, 4], k [1, 2, 3, 4], v [1, 2, 5, 4]: expected q [B, H, T, D] and k, v "
            "[B, Hkv, T, D] with Hkv dividing H");
  EXPECT_TRUE(test::contains(err({2, 3, 4}, {2, 3, 4}, {2, 3, 4}), "q [2, 3, 4], k [2, 3, 4], v [2, 3, 4]"));
  // Grouped heads: Hkv must divide H, and k and v agree with each other and with q elsewhere.
  const std::string want = "with Hkv dividing H";
  EXPECT_TRUE(test::contains(err({1, 4, 3, 4}, {1, 3, 3, 4}, {1, 3, 3, 4}), "k [1, 3, 3, 4]")) << want;
  EXPECT_TRUE(test::contains(err({1, 4, 3, 4}, {1, 3, 3, 4}, {1, 3, 3, 4}), want));
  EXPECT_TRUE(test::contains(err({1, 4, 3, 4}, {1, 8, 3, 4}, {1, 8, 3, 4}), want));
  EXPECT_TRUE(test::contains(err({1, 4, 3, 4}, {1, 2, 3, 4}, {1, 1, 3, 4}), want));
  EXPECT_TRUE(test::contains(err({1, 4, 3, 4}, {1, 2, 5, 4}, {1, 2, 5, 4}), want));
  EXPECT_TRUE(test::contains(err({1, 4, 3, 4}, {1, 2, 3, 8}, {1, 2, 3, 8}), want));
  EXPECT_TRUE(test::contains(err({1, 4, 3, 4}, {2, 2, 3, 4}, {2, 2, 3, 4}), want));
  EXPECT_TRUE(test::contains(err({1, 4, 3, 4}, {1, 0, 3, 4}, {1, 0, 3, 4}), want));
  EXPECT_EQ(err({1, 4, 3, 4}, {1, 2, 3, 4}, {1, 2, 3, 4}), "(no error)");  // accepted
  EXPECT_EQ(err({1, 2, 3, 4}, {1, 2, 3, 4}, {1, 2, 3, 4}, DType::f64),
            "causal_attention: dtype mismatch: q is f32, v is f64");
}

// causal_self_attention == split, heads, causal_attention, merge, done by hand in f64: qkv
// [B, T, (H + 2 Hkv) D] = H query heads | Hkv key heads | Hkv value heads.
Tensor self_attention_reference(const Tensor& qkv, int64_t H, int64_t Hkv) {
  const int64_t B = qkv.size(0), T = qkv.size(1), D = qkv.size(2) / (H + 2 * Hkv);
  auto heads = [&](int64_t first, int64_t n) {
    return qkv.to(DType::f64).slice(2, first * D, (first + n) * D).contiguous().reshape({B, T, n, D}).transpose(1, 2)
        .contiguous();
  };
  Tensor o = reference(heads(0, H), heads(H, Hkv), heads(H + Hkv, Hkv));  // [B, H, T, D]
  return o.transpose(1, 2).contiguous().reshape({B, T, H * D});
}
Tensor self_attention_reference(const Tensor& qkv, int64_t H) { return self_attention_reference(qkv, H, H); }

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

// Grouped-query heads: multi-query (Hkv = 1), Hkv = H / 2, and Hkv = H / 3.
struct GroupedSelf {
  int64_t B, T, H, Hkv, D;
  Shape qkv() const { return {B, T, (H + 2 * Hkv) * D}; }
};

TEST(CausalSelfAttention, GroupedReferenceF64AndF32) {
  for (DType dtype : {DType::f64, DType::f32})
    for (const GroupedSelf& c : {GroupedSelf{2, 5, 4, 1, 3}, GroupedSelf{1, 67, 4, 2, 8}, GroupedSelf{2, 1, 2, 1, 4},
                                 GroupedSelf{1, 130, 6, 2, 5}}) {
      Tensor qkv = random(c.qkv(), dtype);
      Variable out = ops::causal_self_attention(Variable(qkv), c.H, c.Hkv);
      EXPECT_EQ(out.shape(), (Shape{c.B, c.T, c.H * c.D}));
      EXPECT_TRUE(close_rel(out.tensor(), self_attention_reference(qkv, c.H, c.Hkv),
                            dtype == DType::f64 ? 1e-13 : 1e-5))
          << shape_str(c.qkv()) << " H " << c.H << " Hkv " << c.Hkv << " " << dtype_name(dtype);
    }
}

// n_kv_head == n_head is the plain op, bit for bit, output and gradient: against the split /
// heads / causal_attention / merge composite written out with the equal-parts split.
TEST(CausalSelfAttention, EqualHeadsIsThePlainOpExactly) {
  for (DType dtype : {DType::f64, DType::f32, DType::bf16}) {
    const int64_t B = 2, T = 67, H = 3, D = 8, C = H * D;
    const Tensor x = random({B, T, 3 * C}, dtype), dout = random({B, T, C}, dtype);
    Variable a(x, true), b(x, true);
    Variable got = ops::causal_self_attention(a, H, H);
    std::vector<Variable> parts = ops::split_last(b, 3);
    auto heads = [&](const Variable& v) { return ops::transpose(ops::reshape(v, {B, T, H, D}), 1, 2); };
    Variable want =
        ops::reshape(ops::transpose(ops::causal_attention(heads(parts[0]), heads(parts[1]), heads(parts[2])), 1, 2),
                     {B, T, C});
    EXPECT_TRUE(test::close_elementwise(got.tensor(), want.tensor(), 0, 0)) << dtype_name(dtype);
    got.backward(dout);
    want.backward(dout);
    EXPECT_TRUE(test::close_elementwise(a.grad(), b.grad(), 0, 0)) << dtype_name(dtype);
    // The two-argument form is the same call.
    EXPECT_TRUE(test::close_elementwise(ops::causal_self_attention(Variable(x), H).tensor(), got.tensor(), 0, 0));
  }
}

TEST(CausalSelfAttention, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::causal_self_attention(in[0], 3); };
  EXPECT_TRUE(test::gradcheck(f, {random({2, 4, 18}, DType::f64)}));
}

TEST(CausalSelfAttention, GroupedGradCheck) {
  for (const GroupedSelf& c : {GroupedSelf{2, 4, 4, 1, 2}, GroupedSelf{1, 5, 4, 2, 3}, GroupedSelf{1, 3, 6, 3, 2}}) {
    auto f = [c](const std::vector<Variable>& in) { return ops::causal_self_attention(in[0], c.H, c.Hkv); };
    EXPECT_TRUE(test::gradcheck(f, {random(c.qkv(), DType::f64)})) << "H " << c.H << " Hkv " << c.Hkv;
  }
}

TEST(CausalSelfAttention, ShapeErrors) {
  auto err = [](const Shape& s, int64_t H, int64_t Hkv) {
    return test::error_of([&] { ops::causal_self_attention(Variable(Tensor::zeros(s, DType::f32)), H, Hkv); });
  };
  EXPECT_EQ(err({2, 12}, 2, 2), "causal_self_attention: qkv [2, 12]: expected [B, T, (n_head + 2 n_kv_head) D]");
  EXPECT_EQ(err({2, 3, 10}, 1, 1),
            "causal_self_attention: qkv [2, 3, 10]: last dimension 10 is not a multiple of n_head + 2 n_kv_head = 3 "
            "(n_head 1, n_kv_head 1)");
  EXPECT_EQ(err({2, 3, 12}, 3, 3),
            "causal_self_attention: qkv [2, 3, 12]: last dimension 12 is not a multiple of n_head + 2 n_kv_head = 9 "
            "(n_head 3, n_kv_head 3)");
  EXPECT_EQ(err({2, 3, 12}, 0, 0), "causal_self_attention: n_kv_head 0 does not divide n_head 0");
  EXPECT_EQ(err({2, 3, 12}, 4, 3), "causal_self_attention: n_kv_head 3 does not divide n_head 4");
  EXPECT_EQ(err({2, 3, 12}, 2, 4), "causal_self_attention: n_kv_head 4 does not divide n_head 2");
  EXPECT_EQ(err({2, 3, 12}, 4, 0), "causal_self_attention: n_kv_head 0 does not divide n_head 4");
  EXPECT_EQ(err({2, 3, 12}, -2, 1), "causal_self_attention: n_kv_head 1 does not divide n_head -2");
  // H + 2 Hkv = 6 divides 12 (D = 2), but 8 does not divide 21.
  EXPECT_EQ(err({2, 3, 12}, 4, 1), "(no error)");
  EXPECT_EQ(err({2, 3, 21}, 4, 2),
            "causal_self_attention: qkv [2, 3, 21]: last dimension 21 is not a multiple of n_head + 2 n_kv_head = 8 "
            "(n_head 4, n_kv_head 2)");
  // The two-argument form checks the same way.
  EXPECT_EQ(test::error_of([] { ops::causal_self_attention(Variable(Tensor::zeros({2, 3, 12}, DType::f32)), 3); }),
            "causal_self_attention: qkv [2, 3, 12]: last dimension 12 is not a multiple of n_head + 2 n_kv_head = 9 "
            "(n_head 3, n_kv_head 3)");
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
  ops::causal_self_attention(Variable(random({1, 3, 12}, DType::f32)), 4, 1);  // grouped heads
  EXPECT_EQ(ops::attention_calls(ops::AttentionBackend::unfused).forward, before.forward + 2);
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
