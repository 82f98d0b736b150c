// Vocab-parallel cross-entropy over Gloo (2 and 4 ranks, each a thread with its own process
// group) equals the single-rank op within fp32 rounding: loss, logging outputs and gradient.
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
  int64_t v;
  double smoothing, z;
  Reduction reduction;
};

std::string describe(const TpCase& c) {
  return detail::cat("ranks ", c.ranks, " dtype ", dtype_name(c.dtype), " V ", c.v, " smoothing ", c.smoothing, " z ",
                     c.z, " reduction ", c.reduction == Reduction::mean ? "mean" : "none");
}

void check_tp(const TpCase& c, Tensor logits = Tensor()) {
  SCOPED_TRACE(describe(c));
  const int64_t n = 8, v_local = c.v / c.ranks;
  if (!logits.defined()) logits = Tensor::randn({n, c.v}, DType::f64, test::test_generator(), 0, 3).to(c.dtype);
  std::vector<int64_t> y(n);
  for (int64_t i = 0; i < n; ++i)
    y[i] = static_cast<int64_t>(test::test_generator().uniform() * static_cast<double>(c.v)) % c.v;
  y[2] = -100;  // an ignored row
  y[5] = c.v - 1;  // the last shard's last column
  const Tensor targets = Tensor::from_vector(y, {n});

  CrossEntropyOptions opt;
  opt.label_smoothing = c.smoothing;
  opt.z_loss_weight = c.z;
  opt.reduction = c.reduction;
  const Outputs one = run_op(logits, targets, opt, n);

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

}  // namespace
}  // namespace zt
