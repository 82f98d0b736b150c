// embedding lookup against a float64 loop, finite differences on the weight (scatter-add
// with repeated ids), and the errors for bad ids and shapes.
#include "ops/embedding.h"

#include <gtest/gtest.h>

#include "tests/ops/op_test_util.h"

namespace zt {
namespace {

using test::close_rel;
using test::random;

// Random ids in [0, vocab) with repeats (so backward must accumulate rows).
Tensor random_ids(const Shape& shape, int64_t vocab, DType dtype) {
  std::vector<int64_t> ids(shape_numel(shape));
  for (int64_t& id : ids) id = static_cast<int64_t>(test::test_generator().below(vocab));
  if (!ids.empty()) ids[0] = ids.back();  // at least one repeat
  Tensor t = Tensor::from_vector(ids, shape);
  return t.to(dtype);
}

Tensor reference_lookup(const Tensor& weight, const Tensor& ids) {
  const int64_t C = weight.size(1);
  std::vector<double> W = weight.to_vector<double>(), out;
  for (int64_t id : ids.to_vector<int64_t>()) out.insert(out.end(), W.begin() + id * C, W.begin() + (id + 1) * C);
  Shape shape = ids.shape();
  shape.push_back(C);
  return Tensor::from_vector(out, shape);
}

// dW[v] = sum of grad rows whose id is v.
Tensor reference_weight_grad(const Tensor& grad, const Tensor& ids, int64_t vocab) {
  const int64_t C = grad.shape().back();
  std::vector<double> G = grad.to_vector<double>(), dW(vocab * C, 0.0);
  std::vector<int64_t> I = ids.to_vector<int64_t>();
  for (size_t i = 0; i < I.size(); ++i)
    for (int64_t c = 0; c < C; ++c) dW[I[i] * C + c] += G[i * C + c];
  return Tensor::from_vector(dW, {vocab, C});
}

void check_reference(DType dtype, double tol) {
  for (DType id_dtype : {DType::i32, DType::i64})
    for (const Shape& ids_shape : {Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 3, 4}, Shape{64, 129}}) {
      const int64_t vocab = 37, C = 19;
      Tensor weight = random({vocab, C}, dtype);
      Tensor ids = random_ids(ids_shape, vocab, id_dtype);
      Variable w(weight, true);
      Variable out = ops::embedding(w, Variable(ids));
      EXPECT_EQ(out.dtype(), dtype);
      EXPECT_TRUE(close_rel(out.tensor(), reference_lookup(weight, ids), 0)) << shape_str(ids_shape);
      Tensor grad = random(out.shape(), dtype);
      out.backward(grad);
      EXPECT_TRUE(close_rel(w.grad(), reference_weight_grad(grad, ids, vocab), tol)) << shape_str(ids_shape);
    }
}

TEST(Embedding, ReferenceF64) { check_reference(DType::f64, 1e-15); }
TEST(Embedding, ReferenceF32) { check_reference(DType::f32, 1e-6); }
TEST(Embedding, ReferenceBf16) { check_reference(DType::bf16, 1e-2); }

TEST(Embedding, GradCheck) {
  Tensor ids = random_ids({2, 5}, 4, DType::i64);
  auto f = [](const std::vector<Variable>& in) { return ops::embedding(in[0], in[1]); };
  EXPECT_TRUE(test::gradcheck(f, {random({4, 3}, DType::f64), ids}, {true, false}));
}

TEST(Embedding, ScatterAddAcrossThreadsMatchesLoop) {
  // Large enough that the backward runs threaded; ids concentrated on a few rows.
  const int64_t vocab = 11, C = 64;
  Tensor ids = random_ids({4096}, vocab, DType::i32);
  Variable w(random({vocab, C}, DType::f32), true);
  Variable out = ops::embedding(w, Variable(ids));
  Tensor grad = random(out.shape(), DType::f32);
  out.backward(grad);
  EXPECT_TRUE(close_rel(w.grad(), reference_weight_grad(grad, ids, vocab), 1e-6));
}

TEST(Embedding, IdOutOfRangeNamesPositionAndValue) {
  Variable w(random({10, 3}, DType::f32));
  Tensor ids = Tensor::from_vector<int64_t>({1, 2, 3, 4, 10, 5}, {2, 3});
  EXPECT_EQ(test::error_of([&] { ops::embedding(w, Variable(ids)); }),
            "embedding: id 10 at position [1, 1] of ids [2, 3] is outside [0, 10)");
  Tensor negative = Tensor::from_vector<int32_t>({0, -1}, {2});
  EXPECT_EQ(test::error_of([&] { ops::embedding(w, Variable(negative)); }),
            "embedding: id -1 at position [1] of ids [2] is outside [0, 10)");
}

TEST(Embedding, ShapeAndDtypeErrors) {
  Tensor ids = Tensor::from_vector<int64_t>({0, 1}, {2});
  EXPECT_EQ(test::error_of([&] { ops::embedding(Variable(random({10}, DType::f32)), Variable(ids)); }),
            "embedding: weight must be [V, C], got [10]");
  EXPECT_EQ(test::error_of([&] { ops::embedding(Variable(random({10, 3}, DType::f32)), Variable(ids.to(DType::f32))); }),
            "embedding: ids must be i32 or i64, got f32");
  EXPECT_EQ(test::error_of([&] { ops::embedding(Variable(Tensor::zeros({10, 3}, DType::i64)), Variable(ids)); }),
            "embedding: weight must be floating (f32, bf16, f64), got i64");
}

}  // namespace
}  // namespace zt

namespace zt {
namespace {

// A vocab-parallel lookup: the shards' outputs sum to the whole table's lookup, and each
// shard's gradient is its rows of the whole gradient. Ids sit on every shard, on both sides
// of each border, and in the padding-free last row; the table has padding rows past `vocab`.
TEST(EmbeddingShard, ShardsSumToTheWholeLookup) {
  const int64_t rows = 12, vocab = 11, C = 5, parts = 3, per = rows / parts;
  Tensor table = test::random({rows, C}, DType::f64);
  const Tensor ids = Tensor::from_vector<int64_t>({0, 3, 4, 7, 8, 10, 4, 3, 9, 1}, {2, 5});
  Variable whole_w(table, true);
  Variable whole = ops::embedding_shard(whole_w, Variable(ids), 0, vocab);
  Tensor grad = test::random(whole.shape(), DType::f64);
  whole.backward(grad);
  Tensor sum = Tensor::zeros(whole.shape(), DType::f64);
  for (int64_t r = 0; r < parts; ++r) {
    Variable w(table.slice(0, r * per, (r + 1) * per).contiguous(), true);
    Variable out = ops::embedding_shard(w, Variable(ids), r * per, vocab);
    sum.add_(out.tensor());
    out.backward(grad);
    EXPECT_TRUE(close_rel(w.grad(), whole_w.grad().slice(0, r * per, (r + 1) * per).contiguous(), 1e-15)) << r;
  }
  EXPECT_TRUE(close_rel(sum, reference_lookup(table, ids), 0));
  // The padding row 11 is no id: out of range like any other, named by position.
  const Tensor pad = Tensor::from_vector<int64_t>({2, 11}, {2});
  EXPECT_EQ(test::error_of([&] { ops::embedding_shard(Variable(table.slice(0, 8, 12).contiguous()), Variable(pad), 8, vocab); }),
            "embedding: id 11 at position [1] of ids [2] is outside [0, 11)");
}

}  // namespace
}  // namespace zt
