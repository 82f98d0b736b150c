// reshape, transpose and split_last against float64 index loops, finite differences, the
// strided-copy kernel they share, and errors.
#include "ops/shape_ops.h"

#include <gtest/gtest.h>

#include "ops/elementwise.h"
#include "ops/shape_ops_kernels.h"
#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

// Row-major multi-index <-> flat index.
std::vector<int64_t> unravel(int64_t flat, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
    idx[d] = flat % s[d];
    flat /= s[d];
  }
  return idx;
}
int64_t ravel(const std::vector<int64_t>& idx, const Shape& s) {
  int64_t flat = 0;
  for (size_t d = 0; d < s.size(); ++d) flat = flat * s[d] + idx[d];
  return flat;
}

// out[..., i, ..., j, ...] = x[..., j, ..., i, ...]
Tensor reference_transpose(const Tensor& x, int64_t d0, int64_t d1) {
  Shape os = x.shape();
  std::swap(os[d0], os[d1]);
  std::vector<double> X = x.to_vector<double>(), out(X.size());
  for (int64_t f = 0; f < static_cast<int64_t>(out.size()); ++f) {
    std::vector<int64_t> idx = unravel(f, os);
    std::swap(idx[d0], idx[d1]);
    out[f] = X[ravel(idx, x.shape())];
  }
  return Tensor::from_vector(out, os);
}

TEST(Reshape, ReferenceF64) {
  Tensor x = random({2, 3, 4}, DType::f64);
  for (const auto& [requested, want] : {std::pair<Shape, Shape>{{6, 4}, {6, 4}}, {{-1}, {24}}, {{4, -1, 2}, {4, 3, 2}},
                                       {{1, 24, 1}, {1, 24, 1}}}) {
    Variable y = ops::reshape(Variable(x), requested);
    ASSERT_EQ(y.shape(), want);
    EXPECT_EQ(y.tensor().to_vector<double>(), x.to_vector<double>()) << "row-major order is kept";
  }
  // A strided input reshapes in its logical (row-major) order.
  Tensor xt = x.transpose(0, 2);
  Variable y = ops::reshape(Variable(xt), {4, 6});
  EXPECT_EQ(y.tensor().to_vector<double>(), xt.contiguous().to_vector<double>());
  EXPECT_EQ(ops::reshape(Variable(x), {24}).tensor().raw_data(), x.raw_data()) << "contiguous input: a view";
}

TEST(Reshape, ReferenceF32) {
  Tensor x = random({5, 7}, DType::f32).transpose(0, 1);
  EXPECT_TRUE(close_rel(ops::reshape(Variable(x), {35}).tensor(), x.contiguous().reshape({35}), 0));
}

TEST(Reshape, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::reshape(in[0], {3, -1}); };
  EXPECT_TRUE(test::gradcheck(f, {random({2, 3, 2}, DType::f64)}));
  // Non-contiguous input: the gradient must come back in x's layout.
  auto g = [](const std::vector<Variable>& in) { return ops::reshape(ops::transpose(in[0], 0, 1), {-1}); };
  EXPECT_TRUE(test::gradcheck(g, {random({3, 4}, DType::f64)}));
}

TEST(Reshape, Errors) {
  Variable x(Tensor::zeros({2, 3}, DType::f32));
  EXPECT_EQ(test::error_of([&] { ops::reshape(x, {4, 2}); }),
            "reshape: cannot reshape [2, 3] (6 elements) into [4, 2] (8 elements)");
  EXPECT_EQ(test::error_of([&] { ops::reshape(x, {4, -1}); }), "reshape: cannot reshape [2, 3] (6 elements) into [4, -1]");
  EXPECT_EQ(test::error_of([&] { ops::reshape(x, {-1, -1}); }), "reshape: [-1, -1] has more than one -1");
}

void check_transpose_reference(DType dtype) {
  for (const auto& [s, d0, d1] : {std::tuple<Shape, int64_t, int64_t>{{3, 5}, 0, 1}, {{2, 3, 4}, 0, 2},
                                  {{2, 7, 3, 5}, 1, 2}, {{2, 7, 3, 5}, 2, 3}, {{4, 1, 6}, 0, 1}, {{9, 130, 33}, -1, 0}}) {
    Tensor x = random(s, dtype);
    Variable y = ops::transpose(Variable(x), d0, d1);
    EXPECT_TRUE(y.tensor().is_contiguous());
    const int64_t a = d0 < 0 ? d0 + x.dim() : d0, b = d1 < 0 ? d1 + x.dim() : d1;
    EXPECT_TRUE(close_rel(y.tensor(), reference_transpose(x, a, b), 0)) << shape_str(s) << " " << d0 << "," << d1;
  }
}

TEST(Transpose, ReferenceF64) { check_transpose_reference(DType::f64); }
TEST(Transpose, ReferenceF32AndBf16) {
  check_transpose_reference(DType::f32);
  check_transpose_reference(DType::bf16);
}

TEST(Transpose, GradCheck) {
  auto f = [](const std::vector<Variable>& in) { return ops::transpose(in[0], 1, 2); };
  EXPECT_TRUE(test::gradcheck(f, {random({2, 3, 4, 2}, DType::f64)}));
  auto g = [](const std::vector<Variable>& in) { return ops::transpose(in[0], 0, -1); };
  EXPECT_TRUE(test::gradcheck(g, {random({3, 5}, DType::f64)}));
}

TEST(Transpose, Errors) {
  Variable x(Tensor::zeros({2, 3}, DType::f32));
  EXPECT_EQ(test::error_of([&] { ops::transpose(x, 0, 2); }), "transpose: dimension 2 out of range for shape [2, 3]");
  EXPECT_EQ(test::error_of([&] { ops::transpose(x, -3, 1); }), "transpose: dimension -3 out of range for shape [2, 3]");
}

TEST(SplitLast, ReferenceF64) {
  for (const auto& [s, parts] : {std::pair<Shape, int64_t>{{2, 9}, 3}, {{4, 3, 12}, 2}, {{5}, 5}, {{3, 7}, 1}}) {
    Tensor x = random(s, DType::f64);
    std::vector<Variable> pieces = ops::split_last(Variable(x), parts);
    ASSERT_EQ(static_cast<int64_t>(pieces.size()), parts);
    const int64_t last = s.back(), width = last / parts, rows = x.numel() / last;
    std::vector<double> X = x.to_vector<double>();
    for (int64_t p = 0; p < parts; ++p) {
      Shape ps = s;
      ps.back() = width;
      ASSERT_EQ(pieces[p].shape(), ps);
      EXPECT_TRUE(pieces[p].tensor().is_contiguous());
      std::vector<double> want;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < width; ++j) want.push_back(X[r * last + p * width + j]);
      EXPECT_EQ(pieces[p].tensor().to_vector<double>(), want) << shape_str(s) << " piece " << p;
    }
  }
}

TEST(SplitLast, ReferenceF32) {
  Tensor x = random({64, 3 * 97}, DType::f32);
  std::vector<Variable> pieces = ops::split_last(Variable(x), 3);
  for (int64_t p = 0; p < 3; ++p)
    EXPECT_TRUE(close_rel(pieces[p].tensor(), x.slice(1, p * 97, (p + 1) * 97).contiguous(), 0));
}

TEST(SplitLast, GradCheck) {
  // Uses every piece with a different weight, and also just one piece (the others get no
  // gradient and must contribute zeros).
  auto f = [](const std::vector<Variable>& in) {
    std::vector<Variable> p = ops::split_last(in[0], 3);
    return ops::reshape(ops::transpose(ops::reshape(p[2], {2, 2, 2}), 0, 1), {8});
  };
  EXPECT_TRUE(test::gradcheck(f, {random({4, 6}, DType::f64)}));
  auto all = [](const std::vector<Variable>& in) {
    std::vector<Variable> p = ops::split_last(in[0], 2);
    return ops::transpose(ops::reshape(p[0], {3, 2, 2}), 0, 2);
  };
  EXPECT_TRUE(test::gradcheck(all, {random({3, 2, 4}, DType::f64)}));
}

TEST(SplitLast, BackwardSumsAllPieces) {
  Variable x(random({3, 6}, DType::f64), true);
  std::vector<Variable> p = ops::split_last(x, 3);
  Tensor g0 = random({3, 2}, DType::f64), g2 = random({3, 2}, DType::f64);
  p[0].backward(g0);
  p[2].backward(g2);
  std::vector<double> G0 = g0.to_vector<double>(), G2 = g2.to_vector<double>(), dx = x.grad().to_vector<double>();
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t j = 0; j < 6; ++j) {
      const double want = j < 2 ? G0[r * 2 + j] : j >= 4 ? G2[r * 2 + j - 4] : 0.0;
      EXPECT_EQ(dx[r * 6 + j], want) << r << "," << j;
    }
}

TEST(SplitLast, Errors) {
  Variable x(Tensor::zeros({2, 10}, DType::f32));
  EXPECT_EQ(test::error_of([&] { ops::split_last(x, 3); }),
            "split_last: last dimension 10 of [2, 10] does not split into 3 equal parts");
  EXPECT_EQ(test::error_of([&] { ops::split_last(x, 0); }), "split_last: parts must be >= 1, got 0");
  EXPECT_EQ(test::error_of([&] { ops::split_last(Variable(Tensor::zeros({}, DType::f32)), 1); }),
            "split_last: x must have at least one dimension, got shape []");
}

// Pieces of given widths (the grouped-query projection H D | Hkv D | Hkv D), by index loops.
TEST(SplitLast, WidthsReferenceF64) {
  const Shape s{3, 2, 13};
  const std::vector<int64_t> widths{8, 2, 0, 3};
  Tensor x = random(s, DType::f64);
  std::vector<Variable> pieces = ops::split_last(Variable(x), widths);
  ASSERT_EQ(pieces.size(), widths.size());
  const std::vector<double> X = x.to_vector<double>();
  int64_t offset = 0;
  for (size_t p = 0; p < widths.size(); ++p) {
    ASSERT_EQ(pieces[p].shape(), (Shape{3, 2, widths[p]}));
    std::vector<double> want;
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t j = 0; j < widths[p]; ++j) want.push_back(X[r * 13 + offset + j]);
    EXPECT_EQ(pieces[p].tensor().to_vector<double>(), want) << "piece " << p;
    offset += widths[p];
  }
}

TEST(SplitLast, WidthsGradCheck) {
  // The two narrow pieces multiplied (the wide one gets zeros), then the wide one alone.
  auto narrow = [](const std::vector<Variable>& in) {
    std::vector<Variable> p = ops::split_last(in[0], {4, 1, 1});
    return ops::mul(p[1], p[2]);
  };
  EXPECT_TRUE(test::gradcheck(narrow, {random({3, 6}, DType::f64)}));
  auto wide = [](const std::vector<Variable>& in) {
    return ops::transpose(ops::split_last(in[0], {4, 1, 1})[0], 0, 1);
  };
  EXPECT_TRUE(test::gradcheck(wide, {random({3, 6}, DType::f64)}));
}

TEST(SplitLast, WidthsErrors) {
  Variable x(Tensor::zeros({2, 10}, DType::f32));
  EXPECT_EQ(test::error_of([&] { ops::split_last(x, std::vector<int64_t>{4, 4}); }),
            "split_last: piece widths adding up to 8 do not split the last dimension of [2, 10]");
  EXPECT_EQ(test::error_of([&] { ops::split_last(x, std::vector<int64_t>{}); }),
            "split_last: piece widths adding up to 0 do not split the last dimension of [2, 10]");
  EXPECT_EQ(test::error_of([&] { ops::split_last(x, std::vector<int64_t>{12, -2}); }),
            "split_last: piece width -2 is negative");
}

TEST(ShapeOps, StridedCopyKernelMatchesGenericCopy) {
  // Views with inner stride 1 (memcpy rows), inner stride > 1 (gathers), slices with offsets,
  // poisoned sources outside the view, every element size.
  for (DType dtype : {DType::f64, DType::f32, DType::bf16, DType::i32, DType::i64}) {
    Tensor base = random({6, 8, 10}, DType::f64, 10).to(dtype);
    for (const Tensor& view : {base.transpose(0, 2), base.transpose(1, 2), base.slice(2, 3, 9), base.slice(0, 1, 4).transpose(0, 1),
                               base.select(1, 5), base.slice(1, 2, 3)}) {
      Tensor fast = ops::contiguous_cpu(view);
      EXPECT_TRUE(fast.is_contiguous());
      EXPECT_EQ(fast.to_vector<double>(), view.contiguous().to_vector<double>()) << dtype_name(dtype);
    }
  }
}

}  // namespace
}  // namespace zt
