// matmul and linear against float64 loops, finite differences, and their error messages.
#include "ops/matmul.h"

#include <gtest/gtest.h>

#include "ops/matmul_kernels.h"
#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

// C = op(A) op(B) by the definition, in f64; A is [K, M] when ta, B is [N, K] when tb.
std::vector<double> reference_product(const std::vector<double>& A, const std::vector<double>& B, int64_t M,
                                      int64_t N, int64_t K, bool ta, bool tb) {
  std::vector<double> C(M * N, 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += (ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
      C[i * N + j] = s;
    }
  return C;
}

Tensor reference_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const std::vector<double> A = a.to_vector<double>(), B = b.to_vector<double>();
  if (a.dim() == 3) {  // batched
    const int64_t batch = a.size(0), M = ta ? a.size(2) : a.size(1), K = ta ? a.size(1) : a.size(2);
    const int64_t N = tb ? b.size(1) : b.size(2);
    std::vector<double> out;
    for (int64_t i = 0; i < batch; ++i) {
      std::vector<double> Ai(A.begin() + i * M * K, A.begin() + (i + 1) * M * K);
      std::vector<double> Bi(B.begin() + i * K * N, B.begin() + (i + 1) * K * N);
      std::vector<double> Ci = reference_product(Ai, Bi, M, N, K, ta, tb);
      out.insert(out.end(), Ci.begin(), Ci.end());
    }
    return Tensor::from_vector(out, {batch, M, N});
  }
  const int64_t M = ta ? a.size(1) : a.size(0), K = ta ? a.size(0) : a.size(1), N = tb ? b.size(0) : b.size(1);
  return Tensor::from_vector(reference_product(A, B, M, N, K, ta, tb), {M, N});
}

struct Dims3 {
  int64_t M, K, N;
};
const std::vector<Dims3> kShapes = {{1, 1, 1}, {3, 5, 7}, {17, 33, 9}, {64, 31, 65}, {2, 130, 3}};

Shape a_shape(const Dims3& d, bool ta) { return ta ? Shape{d.K, d.M} : Shape{d.M, d.K}; }
Shape b_shape(const Dims3& d, bool tb) { return tb ? Shape{d.N, d.K} : Shape{d.K, d.N}; }

void check_2d_reference(DType dtype, double tol) {
  for (const Dims3& d : kShapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        Tensor a = random(a_shape(d, ta), dtype), b = random(b_shape(d, tb), dtype);
        Variable out = ops::matmul(Variable(a), Variable(b), ta, tb);
        EXPECT_TRUE(close_rel(out.tensor(), reference_matmul(a, b, ta, tb), tol))
            << "M=" << d.M << " K=" << d.K << " N=" << d.N << " ta=" << ta << " tb=" << tb;
        EXPECT_EQ(out.dtype(), dtype);
      }
}

TEST(Matmul, ReferenceF64) { check_2d_reference(DType::f64, 1e-13); }
TEST(Matmul, ReferenceF32) { check_2d_reference(DType::f32, 1e-5); }
TEST(Matmul, ReferenceBf16) { check_2d_reference(DType::bf16, 1e-2); }

TEST(Matmul, BatchedReferenceF64AndF32) {
  for (DType dtype : {DType::f64, DType::f32})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int64_t batch = 5, M = 7, K = 11, N = 3;
        Tensor a = random(ta ? Shape{batch, K, M} : Shape{batch, M, K}, dtype);
        Tensor b = random(tb ? Shape{batch, N, K} : Shape{batch, K, N}, dtype);
        Variable out = ops::matmul(Variable(a), Variable(b), ta, tb);
        EXPECT_TRUE(close_rel(out.tensor(), reference_matmul(a, b, ta, tb), dtype == DType::f64 ? 1e-13 : 1e-5))
            << dtype_name(dtype) << " ta=" << ta << " tb=" << tb;
      }
}

TEST(Matmul, SharedRightOperandReferenceF64AndF32) {
  // [..., K] @ [K, N]: every row of a times the same b.
  for (DType dtype : {DType::f64, DType::f32})
    for (bool tb : {false, true})
      for (const Shape& lead : {Shape{}, Shape{3}, Shape{2, 5}, Shape{2, 3, 1}}) {
        const int64_t K = 13, N = 6;
        Shape as = lead;
        as.push_back(K);
        Tensor a = random(as, dtype), b = random(tb ? Shape{N, K} : Shape{K, N}, dtype);
        Variable out = ops::matmul(Variable(a), Variable(b), false, tb);
        Shape want_shape = lead;
        want_shape.push_back(N);
        ASSERT_EQ(out.shape(), want_shape);
        const int64_t rows = shape_numel(lead);
        Tensor want = reference_matmul(a.reshape({rows, K}), b, false, tb).reshape(want_shape);
        EXPECT_TRUE(close_rel(out.tensor(), want, dtype == DType::f64 ? 1e-13 : 1e-5)) << shape_str(as);
      }
}

TEST(Matmul, KernelOverwritesPoisonedOutputAndAccumulates) {
  for (DType dtype : {DType::f64, DType::f32}) {
    Tensor a = random({4, 9, 5}, dtype), b = random({4, 5, 6}, dtype);
    Tensor out = Tensor::empty({4, 9, 6}, dtype);
    test::poison(out);
    ops::gemm_cpu(a, b, out, {4, 9, 6, 5, false, false});
    const Tensor want = reference_matmul(a, b, false, false);
    EXPECT_TRUE(close_rel(out, want, 1e-5));
    ops::gemm_cpu(a, b, out, {4, 9, 6, 5, false, false}, /*accumulate=*/true);
    Tensor twice = want.clone();
    twice.scale_(2);
    EXPECT_TRUE(close_rel(out, twice, 1e-5));
  }
}

TEST(Matmul, GradCheck2D) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const Dims3 d{3, 4, 5};
      auto f = [&](const std::vector<Variable>& in) { return ops::matmul(in[0], in[1], ta, tb); };
      EXPECT_TRUE(test::gradcheck(f, {random(a_shape(d, ta), DType::f64), random(b_shape(d, tb), DType::f64)}))
          << "ta=" << ta << " tb=" << tb;
    }
}

TEST(Matmul, GradCheckBatched) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      auto f = [&](const std::vector<Variable>& in) { return ops::matmul(in[0], in[1], ta, tb); };
      Tensor a = random(ta ? Shape{2, 4, 3} : Shape{2, 3, 4}, DType::f64);
      Tensor b = random(tb ? Shape{2, 5, 4} : Shape{2, 4, 5}, DType::f64);
      EXPECT_TRUE(test::gradcheck(f, {a, b})) << "ta=" << ta << " tb=" << tb;
    }
}

TEST(Matmul, GradCheckSharedRightOperand) {
  for (bool tb : {false, true}) {
    auto f = [&](const std::vector<Variable>& in) { return ops::matmul(in[0], in[1], false, tb); };
    Tensor b = random(tb ? Shape{3, 4} : Shape{4, 3}, DType::f64);
    EXPECT_TRUE(test::gradcheck(f, {random({2, 3, 4}, DType::f64), b})) << "tb=" << tb;
    EXPECT_TRUE(test::gradcheck(f, {random({4}, DType::f64), b})) << "1-D a, tb=" << tb;
  }
}

TEST(Matmul, GradCheckOneOperandWithoutGradient) {
  auto f = [](const std::vector<Variable>& in) { return ops::matmul(in[0], in[1]); };
  EXPECT_TRUE(test::gradcheck(f, {random({3, 4}, DType::f64), random({4, 2}, DType::f64)}, {true, false}));
  EXPECT_TRUE(test::gradcheck(f, {random({3, 4}, DType::f64), random({4, 2}, DType::f64)}, {false, true}));
}

TEST(Matmul, ShapeAndDtypeErrorsNameBoth) {
  auto m = [](const Shape& a, const Shape& b, bool ta = false, bool tb = false, DType da = DType::f32,
              DType db = DType::f32) {
    return test::error_of([&] { ops::matmul(Variable(Tensor::zeros(a, da)), Variable(Tensor::zeros(b, db)), ta, tb); });
  };
  EXPECT_EQ(m({2, 3}, {4, 5}), "matmul: [2, 3] x [4, 5]: inner dimensions 3 and 4 differ");
  EXPECT_EQ(m({3, 2}, {4, 5}, true), "matmul: [3, 2]^T x [4, 5]: inner dimensions 3 and 4 differ");
  EXPECT_EQ(m({2, 3}, {5, 4}, false, true), "matmul: [2, 3] x [5, 4]^T: inner dimensions 3 and 4 differ");
  EXPECT_EQ(m({2, 3, 4}, {5, 4, 6}), "matmul: [2, 3, 4] x [5, 4, 6]: batch sizes 2 and 5 differ");
  EXPECT_EQ(m({2, 3, 4}, {2, 5, 6}), "matmul: [2, 3, 4] x [2, 5, 6]: inner dimensions 4 and 5 differ");
  EXPECT_EQ(m({7, 2, 3}, {3, 4}), "(no error)");
  EXPECT_TRUE(test::contains(m({2, 3}, {3, 4, 5}), "matmul: unsupported operands [2, 3] x [3, 4, 5]"));
  EXPECT_TRUE(test::contains(m({2, 3, 4}, {3, 4}, true), "unsupported operands [2, 3, 4]^T x [3, 4]"));
  EXPECT_EQ(m({2, 3}, {3, 4}, false, false, DType::f32, DType::f64), "matmul: dtype mismatch: a is f32, b is f64");
  EXPECT_EQ(m({2, 3}, {3, 4}, false, false, DType::i64, DType::i64),
            "matmul: a must be floating (f32, bf16, f64), got i64");
}

// ---- linear ----

// y = x w^T + bias by the definition.
Tensor reference_linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t in = w.size(1), out = w.size(0), rows = x.numel() / in;
  std::vector<double> X = x.to_vector<double>(), W = w.to_vector<double>(), Y(rows * out);
  std::vector<double> B = bias.defined() ? bias.to_vector<double>() : std::vector<double>(out, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = B[o];
      for (int64_t i = 0; i < in; ++i) s += X[r * in + i] * W[o * in + i];
      Y[r * out + o] = s;
    }
  Shape shape = x.shape();
  shape.back() = out;
  return Tensor::from_vector(Y, shape);
}

void check_linear_reference(DType dtype, double tol) {
  for (const Shape& xs : {Shape{7}, Shape{5, 7}, Shape{2, 3, 7}, Shape{33, 7}})
    for (bool with_bias : {false, true}) {
      Tensor x = random(xs, dtype), w = random({9, 7}, dtype);
      Tensor b = with_bias ? random({9}, dtype) : Tensor();
      Variable y = ops::linear(Variable(x), Variable(w), with_bias ? Variable(b) : Variable());
      EXPECT_TRUE(close_rel(y.tensor(), reference_linear(x, w, b), tol)) << shape_str(xs) << " bias=" << with_bias;
    }
}

TEST(Linear, ReferenceF64) { check_linear_reference(DType::f64, 1e-13); }
TEST(Linear, ReferenceF32) { check_linear_reference(DType::f32, 1e-5); }
TEST(Linear, ReferenceBf16) { check_linear_reference(DType::bf16, 1e-2); }

TEST(Linear, KernelOverwritesPoisonedOutput) {
  for (DType dtype : {DType::f64, DType::f32, DType::bf16})
    for (bool with_bias : {false, true}) {
      Tensor x = random({37, 9}, dtype), w = random({11, 9}, dtype);
      Tensor b = with_bias ? random({11}, dtype) : Tensor();
      Tensor out = Tensor::empty({37, 11}, dtype);
      test::poison(out);
      ops::linear_forward_cpu(x, w, b, out);
      EXPECT_TRUE(close_rel(out, reference_linear(x, w, b), dtype == DType::bf16 ? 1e-2 : 1e-5))
          << dtype_name(dtype) << " bias=" << with_bias;
    }
}

// residual + x w^T + bias, with the residual of the output's shape: the same reference plus r.
TEST(Linear, ResidualIsAddedToTheProductAndBias) {
  for (DType dtype : {DType::f64, DType::f32, DType::bf16})
    for (const Shape& xs : {Shape{37, 45}, Shape{3, 5, 45}, Shape{45}})
      for (bool with_bias : {false, true}) {
        Shape rs = xs;
        rs.back() = 29;
        const Tensor x = random(xs, dtype), w = random({29, 45}, dtype), r = random(rs, dtype);
        const Tensor b = with_bias ? random({29}, dtype) : Tensor();
        const Variable y = ops::linear(Variable(x), Variable(w), with_bias ? Variable(b) : Variable(), Variable(r));
        Tensor want = reference_linear(x, w, b);
        want.add_(r.to(DType::f64));
        const double tol = dtype == DType::bf16 ? 1e-2 : dtype == DType::f32 ? 1e-5 : 1e-13;
        EXPECT_EQ(y.shape(), rs);
        EXPECT_TRUE(close_rel(y.tensor(), want, tol)) << dtype_name(dtype) << " " << shape_str(xs) << " bias=" << with_bias;
      }
}

// bf16: residual, bias and product summed in f32 and rounded once, so the kernel's result is
// the exact sum rounded to bf16 (but where the f32 sum lands across a rounding tie: about
// 1 element in 30000). Rounding the product first and the sum again would miss that on
// about a third of the elements.
TEST(Linear, ResidualKernelRoundsOnceAndOverwritesPoisonedOutput) {
  for (DType dtype : {DType::f64, DType::f32, DType::bf16})
    for (bool with_bias : {false, true}) {
      const Tensor x = random({37, 9}, dtype), w = random({11, 9}, dtype), r = random({37, 11}, dtype);
      const Tensor b = with_bias ? random({11}, dtype) : Tensor();
      Tensor out = Tensor::empty({37, 11}, dtype);
      test::poison(out);
      ops::linear_forward_cpu(x, w, b, out, r);
      Tensor want = reference_linear(x, w, b);
      want.add_(r.to(DType::f64));
      if (dtype == DType::bf16) {
        const std::vector<double> got = out.to_vector<double>();
        const std::vector<double> once = want.to(DType::bf16).to_vector<double>();
        int differ = 0;
        for (size_t i = 0; i < got.size(); ++i) differ += got[i] != once[i];
        EXPECT_LE(differ, 2) << "of " << got.size() << " elements, bias=" << with_bias;
      }
      EXPECT_TRUE(close_rel(out, want, dtype == DType::bf16 ? 1e-2 : 1e-5)) << dtype_name(dtype) << " bias=" << with_bias;
    }
}

// The residual's gradient is the output's gradient itself, exactly, in every dtype; the
// other gradients are the plain linear's.
TEST(Linear, ResidualGradientIsTheOutputGradient) {
  for (DType dtype : {DType::f64, DType::f32, DType::bf16}) {
    const Tensor x = random({4, 6, 10}, dtype), w = random({7, 10}, dtype), b = random({7}, dtype);
    const Tensor r = random({4, 6, 7}, dtype), gy = random({4, 6, 7}, dtype);
    Variable vx(x, true), vw(w, true), vb(b, true), vr(r, true);
    ops::linear(vx, vw, vb, vr).backward(gy);
    ASSERT_TRUE(vr.has_grad());
    EXPECT_EQ(vr.grad().to_vector<double>(), gy.to_vector<double>()) << dtype_name(dtype);
    Variable px(x, true), pw(w, true), pb(b, true);
    ops::linear(px, pw, pb).backward(gy);
    EXPECT_EQ(vx.grad().to_vector<double>(), px.grad().to_vector<double>()) << dtype_name(dtype);
    EXPECT_EQ(vw.grad().to_vector<double>(), pw.grad().to_vector<double>()) << dtype_name(dtype);
    EXPECT_EQ(vb.grad().to_vector<double>(), pb.grad().to_vector<double>()) << dtype_name(dtype);
  }
  // Only the residual needs a gradient.
  Variable vr(random({3, 5}, DType::f32), true);
  const Tensor gy = random({3, 5}, DType::f32);
  ops::linear(Variable(random({3, 4}, DType::f32)), Variable(random({5, 4}, DType::f32)), Variable(), vr).backward(gy);
  EXPECT_EQ(vr.grad().to_vector<double>(), gy.to_vector<double>());
}

TEST(Linear, GradCheckWithResidual) {
  auto f = [](const std::vector<Variable>& in) { return ops::linear(in[0], in[1], in[2], in[3]); };
  EXPECT_TRUE(test::gradcheck(f, {random({2, 3, 4}, DType::f64), random({5, 4}, DType::f64), random({5}, DType::f64),
                                  random({2, 3, 5}, DType::f64)}));
}

TEST(Linear, GradCheckWithBias) {
  auto f = [](const std::vector<Variable>& in) { return ops::linear(in[0], in[1], in[2]); };
  EXPECT_TRUE(test::gradcheck(f, {random({2, 3, 4}, DType::f64), random({5, 4}, DType::f64), random({5}, DType::f64)}));
  EXPECT_TRUE(test::gradcheck(f, {random({4}, DType::f64), random({3, 4}, DType::f64), random({3}, DType::f64)}));
}

TEST(Linear, GradCheckWithoutBias) {
  auto f = [](const std::vector<Variable>& in) { return ops::linear(in[0], in[1]); };
  EXPECT_TRUE(test::gradcheck(f, {random({3, 4}, DType::f64), random({5, 4}, DType::f64)}));
  EXPECT_TRUE(test::gradcheck(f, {random({3, 4}, DType::f64), random({5, 4}, DType::f64)}, {false, true}));
}

TEST(Linear, ShapeAndDtypeErrorsNameBoth) {
  auto lin = [](const Shape& x, const Shape& w, const Shape& b, DType db = DType::f32) {
    return test::error_of([&] {
      ops::linear(Variable(Tensor::zeros(x, DType::f32)), Variable(Tensor::zeros(w, DType::f32)),
                  b.empty() ? Variable() : Variable(Tensor::zeros(b, db)));
    });
  };
  EXPECT_EQ(lin({4, 3}, {5, 4}, {}), "linear: x [4, 3] and w [5, 4]: x's last dimension must equal w's in (4)");
  EXPECT_EQ(lin({4, 3}, {5, 3, 1}, {}), "linear: w must be [out, in], got [5, 3, 1]");
  EXPECT_EQ(lin({4, 3}, {5, 3}, {4}), "linear: bias [4] for w [5, 3]: expected [5]");
  EXPECT_EQ(lin({4, 3}, {5, 3}, {5}, DType::f64), "linear: dtype mismatch: x is f32, bias is f64");
  EXPECT_EQ(lin({4, 3}, {5, 3}, {5}), "(no error)");
}

TEST(Linear, ResidualErrorsNameIt) {
  auto lin = [](const Shape& r, DType dr = DType::f32) {
    return test::error_of([&] {
      ops::linear(Variable(Tensor::zeros({2, 4, 3}, DType::f32)), Variable(Tensor::zeros({5, 3}, DType::f32)), Variable(),
                  Variable(Tensor::zeros(r, dr)));
    });
  };
  EXPECT_EQ(lin({8, 5}), "linear: residual [8, 5] must have the output's shape [2, 4, 5]");
  EXPECT_EQ(lin({2, 4, 3}), "linear: residual [2, 4, 3] must have the output's shape [2, 4, 5]");
  EXPECT_EQ(lin({2, 4, 5}, DType::f64), "linear: dtype mismatch: x is f32, residual is f64");
  EXPECT_EQ(lin({2, 4, 5}, DType::i64), "linear: residual must be floating (f32, bf16, f64), got i64");
  EXPECT_EQ(lin({2, 4, 5}), "(no error)");
}

}  // namespace
}  // namespace zt
