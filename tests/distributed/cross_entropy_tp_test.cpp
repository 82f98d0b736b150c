// Vocab-parallel cross-entropy over Gloo (2 and 4 ranks, each a thread with its own process
// group) equals the single-rank op within fp32 rounding: loss, logging outputs and gradient.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/grad_mode.h"
#include "ops/cross_entropy.h"
#include "tests/support/check.h"
#include "tests/support/multi_rank.h"
#include "tests/support/xent_reference.h"

namespace zt {
namespace {

using ops::CrossEntropyOptions;
using ops::Reduction;

struct Outputs {
  Tensor loss, lse, z_loss, ce_sum, z_sum, count, grad;
};

Outputs run_op(const Tensor& logits, const Tensor& targets, CrossEntropyOptions opt, int64_t n) {
  Variable x(logits.clone(), true);
  ops::CrossEntropyResult r = ops::cross_entropy(x, targets, opt);
  if (opt.reduction == Reduction::none) r.loss.backward(Tensor::full({n}, 1.0, r.loss.dtype()));
  else r.loss.backward();
  return {r.loss.tensor(), r.lse, r.z_loss, r.ce_sum, r.z_sum, r.count, x.grad()};
}

struct TpCase {
  int ranks;
  DType dtype;
  int64_t v;  // the global width
  double smoothing, z;
  Reduction reduction;
  int64_t classes = -1;  // num_classes: global columns [classes, v) are padding; -1: none
  double softcap = 0;    // logit_softcap; 0: off
};

std::string describe(const TpCase& c) {
  return detail::cat("ranks ", c.ranks, " dtype ", dtype_name(c.dtype), " V ", c.v, " smoothing ", c.smoothing, " z ",
                     c.z, " reduction ",
                     c.reduction == Reduction::mean ? "mean" : c.reduction == Reduction::sum ? "sum" : "none",
                     " num_classes ", c.classes, " softcap ", c.softcap);
}

void check_tp(const TpCase& c, Tensor logits = Tensor()) {
  SCOPED_TRACE(describe(c));
  const int64_t n = 8, v_local = c.v / c.ranks, classes = c.classes < 0 ? c.v : c.classes;
  if (!logits.defined()) logits = Tensor::randn({n, c.v}, DType::f64, test::test_generator(), 0, 3).to(c.dtype);
  // Padding columns hold NaN: no rank may read them.
  if (classes < c.v) {
    logits = logits.clone();
    logits.slice(1, classes, c.v).fill_(std::numeric_limits<double>::quiet_NaN());
  }
  std::vector<int64_t> y(n);
  for (int64_t i = 0; i < n; ++i)
    y[i] = static_cast<int64_t>(test::test_generator().uniform() * static_cast<double>(classes)) % classes;
  y[2] = -100;  // an ignored row
  y[5] = classes - 1;  // the last class (the last shard's last column without padding)
  const Tensor targets = Tensor::from_vector(y, {n});

  CrossEntropyOptions opt;
  opt.label_smoothing = c.smoothing;
  opt.z_loss_weight = c.z;
  opt.reduction = c.reduction;
  opt.num_classes = c.classes;
  opt.logit_softcap = c.softcap;
  const Outputs one = run_op(logits, targets, opt, n);
  if (classes < c.v || c.softcap > 0) {  // the one-rank op itself against the f64 reference over the real classes
    const auto ref = test::xent_reference(logits, y, c.smoothing, c.z, -100,
                                          c.reduction == Reduction::mean ? "mean" : c.reduction == Reduction::sum ? "sum" : "none",
                                          1.0, {}, classes, c.softcap);
    EXPECT_TRUE(test::close_rel(one.lse, Tensor::from_vector(ref.lse, {n}), c.dtype == DType::f64 ? 1e-12 : 2e-5));
  }

  const double tol = c.dtype == DType::f64 ? 1e-12 : 2e-6;
  const double grad_rtol = c.dtype == DType::f64 ? 1e-10 : c.dtype == DType::bf16 ? 8e-3 : 2e-5;
  double max_grad = 0;
  for (double g : one.grad.to_vector<double>()) max_grad = std::max(max_grad, std::abs(g));
  test::run_on_ranks(c.ranks, [&](ProcessGroup& g) {
    SCOPED_TRACE(detail::cat("rank ", g.rank()));
    CrossEntropyOptions o = opt;
    o.group = std::shared_ptr<ProcessGroup>(&g, [](ProcessGroup*) {});  // not owned
    const Tensor shard = logits.slice(1, g.rank() * v_local, (g.rank() + 1) * v_local).contiguous();
    const Outputs tp = run_op(shard, targets, o, n);
    EXPECT_TRUE(test::close_rel(tp.loss, one.loss, tol));
    EXPECT_TRUE(test::close_rel(tp.lse, one.lse, tol));
    EXPECT_TRUE(test::close_rel(tp.z_loss, one.z_loss, tol));
    EXPECT_TRUE(test::close_rel(tp.ce_sum, one.ce_sum, tol));
    EXPECT_TRUE(test::close_rel(tp.z_sum, one.z_sum, tol));
    EXPECT_EQ(tp.count.item(), one.count.item());
    const Tensor expected = one.grad.slice(1, g.rank() * v_local, (g.rank() + 1) * v_local).contiguous();
    EXPECT_TRUE(test::close_elementwise(tp.grad, expected, grad_rtol, 1e-6 * max_grad));
    // This shard's padding columns (none, some or all of them): exactly 0, over the NaN
    // the in-place buffer held there.
    const int64_t valid = std::clamp<int64_t>(classes - g.rank() * v_local, 0, v_local);
    const std::vector<double> gv = tp.grad.to_vector<double>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = valid; j < v_local; ++j)
        ASSERT_EQ(gv[i * v_local + j], 0.0) << "row " << i << ", local column " << j;
  });
}

class CrossEntropyTp : public ::testing::TestWithParam<int> {};

TEST_P(CrossEntropyTp, EqualsOneRank) {
  ZT_REQUIRE_GLOO();
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t v : {32, 50304})
      for (double e : {0.0, 0.1})
        for (double z : {0.0, 1e-2})
          for (Reduction red : {Reduction::mean, Reduction::none}) check_tp({GetParam(), dt, v, e, z, red});
}

TEST_P(CrossEntropyTp, Bf16EqualsOneRank) {
  ZT_REQUIRE_GLOO();
  for (double e : {0.0, 0.1}) check_tp({GetParam(), DType::bf16, 32 * GetParam(), e, 1e-4, Reduction::mean});
}

// A shard whose columns are all -inf for a row (masked vocabulary on one rank) adds nothing
// to the row's sum of exponentials instead of NaN.
TEST_P(CrossEntropyTp, MaskedShard) {
  ZT_REQUIRE_GLOO();
  const int ranks = GetParam();
  const int64_t n = 8, v = 16 * ranks;
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor logits = Tensor::randn({n, v}, DType::f64, test::test_generator(), 0, 3);
    double* p = logits.data<double>();
    for (int64_t j = v - v / ranks; j < v; ++j) p[0 * v + j] = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < v; j += 2) p[3 * v + j] = -std::numeric_limits<double>::infinity();
    check_tp({ranks, dt, v, 0.0, 1e-2, Reduction::none}, logits.to(dt));
  }
}

// A vocabulary padded for aligned matmuls (num_classes < width): padding over part of the
// last shard, exactly the last shard, and the last shards plus part of the first; plus
// GPT-2's 50257 classes in 50304 columns. Every reduction, smoothing (its V is num_classes),
// z-loss, an ignored row.
TEST_P(CrossEntropyTp, PaddedVocabulary) {
  ZT_REQUIRE_GLOO();
  const int ranks = GetParam();
  const int64_t width = 64, local = width / ranks;
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t classes : {width - local / 2 - 3, width - local, local - 5})
      for (double e : {0.0, 0.1})
        for (double z : {0.0, 1e-2})
          for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none})
            check_tp({ranks, dt, width, e, z, red, classes});
  check_tp({ranks, DType::f32, 50304, 0.1, 1e-4, Reduction::mean, 50257});
  check_tp({ranks, DType::bf16, width, 0.1, 1e-4, Reduction::mean, width - local / 2 - 3});
}

// Logit soft-capping is elementwise: each rank caps its shard and the statistics combine as
// before. Every reduction, smoothing, z-loss, an ignored row, padding over part of the last
// shard and over whole shards.
TEST_P(CrossEntropyTp, SoftcappedEqualsOneRank) {
  ZT_REQUIRE_GLOO();
  const int ranks = GetParam();
  const int64_t width = 64, local = width / ranks;
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t classes : {int64_t{-1}, width - local / 2 - 3, local - 5})
      for (double e : {0.0, 0.1})
        for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none}) {
          TpCase c{ranks, dt, width, e, 1e-2, red, classes};
          c.softcap = 4.0;
          check_tp(c);
        }
  TpCase c{ranks, DType::bf16, width, 0.1, 1e-4, Reduction::mean, -1};
  c.softcap = 4.0;
  check_tp(c);
}

INSTANTIATE_TEST_SUITE_P(Ranks, CrossEntropyTp, ::testing::Values(2, 4),
                         [](const auto& info) { return std::to_string(info.param) + "ranks"; });

// The smoothing term is e/V times the GLOBAL sum of logits over the GLOBAL V; compare the TP
// loss to the formula directly (the bug of TransformerEngine and Megatron: the local shard).
TEST(CrossEntropyTp, SmoothingUsesGlobalSumAndGlobalV) {
  ZT_REQUIRE_GLOO();
  const int64_t n = 4, v = 16;
  const Tensor logits = Tensor::randn({n, v}, DType::f64, test::test_generator(), 0, 3);
  const std::vector<int64_t> y = {0, 7, 8, 15};
  const auto ref = test::xent_reference(logits, y, 0.2, 0.0, -100, "none");
  test::run_on_ranks(2, [&](ProcessGroup& g) {
    CrossEntropyOptions o;
    o.label_smoothing = 0.2;
    o.reduction = Reduction::none;
    o.group = std::shared_ptr<ProcessGroup>(&g, [](ProcessGroup*) {});
    NoGradGuard forward_only;
    const Tensor shard = logits.slice(1, g.rank() * 8, (g.rank() + 1) * 8).contiguous();
    auto r = ops::cross_entropy(Variable(shard), Tensor::from_vector(y, {n}), o);
    EXPECT_TRUE(test::close_rel(r.loss.tensor(), Tensor::from_vector(ref.row_loss, {n}), 1e-12));
  });
}

// With padding, V of the smoothing term is num_classes and S sums the real classes of every
// shard; checked against the formula with the padding spread over both shards' ends.
TEST(CrossEntropyTp, PaddedSmoothingUsesNumClasses) {
  ZT_REQUIRE_GLOO();
  const int64_t n = 4, width = 16, classes = 6;  // shard 0: 6 classes + 2 padding; shard 1: padding
  const Tensor logits = Tensor::randn({n, width}, DType::f64, test::test_generator(), 0, 3);
  const std::vector<int64_t> y = {0, 5, 3, -100};
  const auto ref = test::xent_reference(logits, y, 0.2, 1e-2, -100, "none", 1.0, {}, classes);
  test::run_on_ranks(2, [&](ProcessGroup& g) {
    CrossEntropyOptions o;
    o.label_smoothing = 0.2;
    o.z_loss_weight = 1e-2;
    o.reduction = Reduction::none;
    o.num_classes = classes;
    o.group = std::shared_ptr<ProcessGroup>(&g, [](ProcessGroup*) {});
    NoGradGuard forward_only;
    const Tensor shard = logits.slice(1, g.rank() * 8, (g.rank() + 1) * 8).contiguous();
    auto r = ops::cross_entropy(Variable(shard), Tensor::from_vector(y, {n}), o);
    EXPECT_TRUE(test::close_rel(r.loss.tensor(), Tensor::from_vector(ref.row_loss, {n}), 1e-12));
  });
}

TEST(CrossEntropyTp, NumClassesBeyondTheGlobalWidthIsAnError) {
  ZT_REQUIRE_GLOO();
  test::run_on_ranks(2, [&](ProcessGroup& g) {
    CrossEntropyOptions o;
    o.num_classes = 17;  // 2 ranks x 8 columns
    o.group = std::shared_ptr<ProcessGroup>(&g, [](ProcessGroup*) {});
    const Tensor shard = Tensor::randn({2, 8}, DType::f32, test::test_generator(), 0, 1);
    EXPECT_EQ(test::error_of([&] { ops::cross_entropy(Variable(shard), Tensor::from_vector(std::vector<int64_t>{1, 2}, {2}), o); }),
              "cross_entropy: num_classes must be -1 (every column is a class) or in [1, 16] (the global width: 8 "
              "columns x 2 ranks), got 17");
  });
}

}  // namespace
}  // namespace zt
