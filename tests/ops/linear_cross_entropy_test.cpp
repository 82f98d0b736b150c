// ops::linear_cross_entropy (the fused head) on CPU: against the unfused composite
// (ops::linear, then ops::cross_entropy) in f64 for every option combination and chunk
// border, against finite differences, in f32/bf16 against f64, and over a vocab-parallel
// group of 2 Gloo ranks against one rank.
#include "ops/linear_cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/grad_mode.h"
#include "framework/device.h"
#include "ops/matmul.h"
#include "tests/support/check.h"
#include "tests/support/multi_rank.h"

namespace zt {
namespace {

using ops::CrossEntropyOptions;
using ops::Reduction;

constexpr int64_t kIgnore = -100;

Tensor randn(Shape shape, double scale) {
  return Tensor::randn(std::move(shape), DType::f64, test::test_generator(), 0, scale);
}

enum class Ignored { none, some, all };

std::vector<int64_t> random_targets(int64_t n, int64_t classes, Ignored ignored) {
  std::vector<int64_t> y(n);
  for (int64_t i = 0; i < n; ++i) {
    y[i] = std::min<int64_t>(classes - 1,
                             static_cast<int64_t>(test::test_generator().uniform() * static_cast<double>(classes)));
    if (ignored == Ignored::all || (ignored == Ignored::some && i % 3 == 1)) y[i] = kIgnore;
  }
  return y;
}

std::string reduction_name(Reduction r) { return r == Reduction::mean ? "mean" : r == Reduction::sum ? "sum" : "none"; }

// Everything one call returns, on the host side of the comparison.
struct Out {
  Tensor loss, lse, z_loss, ce_sum, z_sum, count, dh, dw;
};

// The fused op; backward (seed `seed`) when the reduction is mean or sum.
Out run_fused(const Tensor& h, const Tensor& w, const Tensor& y, const CrossEntropyOptions& o, int64_t chunk,
              double seed = 1.0) {
  const bool grad = o.reduction != Reduction::none;
  Variable hv(h.clone(), grad), wv(w.clone(), grad);
  ops::CrossEntropyResult r = ops::linear_cross_entropy(hv, wv, y, o, chunk);
  EXPECT_NO_THROW(r.check());
  if (grad) r.loss.backward(seed);
  return {r.loss.tensor(), r.lse, r.z_loss, r.ce_sum, r.z_sum, r.count, grad ? hv.grad() : Tensor(),
          grad ? wv.grad() : Tensor()};
}

// The unfused composite: the [N, V] logits, then the cross-entropy.
Out run_composite(const Tensor& h, const Tensor& w, const Tensor& y, CrossEntropyOptions o, double seed = 1.0) {
  const bool grad = o.reduction != Reduction::none;
  Variable hv(h.clone(), grad), wv(w.clone(), grad);
  o.inplace_grad = false;
  ops::CrossEntropyResult r = ops::cross_entropy(ops::linear(hv, wv), y, o);
  if (grad) r.loss.backward(seed);
  return {r.loss.tensor(), r.lse, r.z_loss, r.ce_sum, r.z_sum, r.count, grad ? hv.grad() : Tensor(),
          grad ? wv.grad() : Tensor()};
}

// rel: norm-wise tolerance of every output; the sums and losses of rows that are all ignored
// are exactly 0 on both sides.
void expect_same(const Out& got, const Out& want, double rel) {
  EXPECT_TRUE(test::close_elementwise(got.loss, want.loss, rel, rel));
  EXPECT_TRUE(test::close_elementwise(got.lse, want.lse, rel, rel));
  EXPECT_TRUE(test::close_elementwise(got.z_loss, want.z_loss, rel, rel));
  EXPECT_TRUE(test::close_elementwise(got.ce_sum, want.ce_sum, rel, rel));
  EXPECT_TRUE(test::close_elementwise(got.z_sum, want.z_sum, rel, rel));
  EXPECT_EQ(got.count.item(), want.count.item());
  ASSERT_EQ(got.dh.defined(), want.dh.defined());
  if (got.dh.defined()) {
    EXPECT_EQ(got.dh.dtype(), want.dh.dtype());
    EXPECT_EQ(got.dw.dtype(), want.dw.dtype());
    EXPECT_TRUE(test::close_elementwise(got.dh, want.dh, rel, rel * 1e-2));
    EXPECT_TRUE(test::close_elementwise(got.dw, want.dw, rel, rel * 1e-2));
  }
}

// Every option the op takes, in f64, at every chunk border: chunks of 1 row, a chunk size
// that does not divide N, one chunk, the default bound; ignored rows, all rows ignored.
TEST(LinearCrossEntropy, EqualsTheUnfusedCompositeForEveryOption) {
  const int64_t n = 7, c = 5, v = 11;
  int index = 0;
  for (int64_t classes : {int64_t{-1}, int64_t{9}})
    for (double e : {0.0, 0.1})
      for (double z : {0.0, 1e-2})
        for (double cap : {0.0, 3.0})
          for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none})
            for (Ignored ig : {Ignored::none, Ignored::some, Ignored::all})
              for (int64_t chunk : {int64_t{0}, int64_t{3}, n}) {  // 0: here 1 row (f64)
                CrossEntropyOptions o;
                o.label_smoothing = e;
                o.z_loss_weight = z;
                o.logit_softcap = cap;
                o.reduction = red;
                o.num_classes = classes;
                o.ignore_index = kIgnore;
                if (red != Reduction::none && index % 3 == 0) o.scale = 0.25;
                const double seed = index % 4 == 1 ? 2.5 : 1.0;
                ++index;
                SCOPED_TRACE(detail::cat("num_classes ", classes, " smoothing ", e, " z ", z, " softcap ", cap, " ",
                                         reduction_name(red), " ignored ", static_cast<int>(ig), " chunk ", chunk,
                                         " scale ", o.scale, " seed ", seed));
                const Tensor h = randn({n, c}, 1.0), w = randn({v, c}, 1.0);
                const std::vector<int64_t> yv = random_targets(n, classes < 0 ? v : classes, ig);
                const Tensor y = index % 2 ? Tensor::from_vector(std::vector<int32_t>(yv.begin(), yv.end()), {n})
                                           : Tensor::from_vector(yv, {n});
                expect_same(run_fused(h, w, y, o, chunk, seed), run_composite(h, w, y, o, seed), 1e-12);
              }
}

TEST(LinearCrossEntropy, GradcheckFloat64) {
  const std::vector<int64_t> y = {2, kIgnore, 0, 6, 3};
  for (Reduction red : {Reduction::mean, Reduction::sum})
    for (int64_t chunk : {1, 2, 0}) {
      SCOPED_TRACE(detail::cat(reduction_name(red), " chunk ", chunk));
      CrossEntropyOptions o;
      o.label_smoothing = 0.1;
      o.z_loss_weight = 0.05;
      o.logit_softcap = 2.5;
      o.reduction = red;
      o.num_classes = 7;
      auto f = [&](const std::vector<Variable>& in) {
        return ops::linear_cross_entropy(in[0], in[1], Tensor::from_vector(y, {5}), o, chunk).loss;
      };
      EXPECT_TRUE(test::gradcheck(f, {randn({5, 4}, 1.0), randn({8, 4}, 1.0)}));
    }
}

// f32 and bf16 against the f64 composite on the same (rounded) inputs. bf16: the logits are
// rounded to bf16 like the composite's, dweight accumulates over the chunks in f32.
TEST(LinearCrossEntropy, LowerPrecisionMatchesFloat64) {
  const int64_t n = 37, c = 24, v = 300;
  for (DType dt : {DType::f32, DType::bf16})
    for (double cap : {0.0, 5.0}) {
      SCOPED_TRACE(detail::cat(dtype_name(dt), " softcap ", cap));
      const Tensor h = randn({n, c}, 1.0).to(dt), w = randn({v, c}, 0.5).to(dt);
      const Tensor y = Tensor::from_vector(random_targets(n, 290, Ignored::some), {n});
      CrossEntropyOptions o;
      o.label_smoothing = 0.1;
      o.z_loss_weight = 1e-2;
      o.logit_softcap = cap;
      o.num_classes = 290;
      const Out got = run_fused(h, w, y, o, 5);
      // The reference: f64 inputs, logits rounded to dt as the fused op's scratch rounds them.
      const Tensor logits = ops::linear(Variable(h.to(DType::f64)), Variable(w.to(DType::f64))).tensor().to(dt);
      Variable lv(logits.to(DType::f64), true);
      ops::CrossEntropyResult r = ops::cross_entropy(lv, y, o);
      r.loss.backward();
      const Tensor g = lv.grad();
      const Tensor dh = ops::matmul(Variable(g), Variable(w.to(DType::f64))).tensor();
      const Tensor dw = ops::matmul(Variable(g), Variable(h.to(DType::f64)), true, false).tensor();
      const double tol = dt == DType::bf16 ? 2e-2 : 1e-5;
      EXPECT_TRUE(test::close_rel(got.loss, r.loss.tensor(), tol));
      EXPECT_TRUE(test::close_rel(got.lse, r.lse, tol));
      EXPECT_TRUE(test::close_rel(got.dh, dh, tol));
      EXPECT_TRUE(test::close_rel(got.dw, dw, tol));
      EXPECT_EQ(got.dh.dtype(), dt);
      EXPECT_EQ(got.dw.dtype(), dt);
    }
}

TEST(LinearCrossEntropy, AllRowsIgnoredGivesZeroNeverNaN) {
  const Tensor h = randn({6, 4}, 1.0), w = randn({9, 4}, 1.0);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>(6, kIgnore), {6});
  const Out got = run_fused(h, w, y, {}, 4);
  EXPECT_EQ(got.loss.item(), 0.0);
  EXPECT_EQ(got.count.item(), 0.0);
  for (const Tensor& t : {got.dh, got.dw})
    for (double x : t.to_vector<double>()) ASSERT_EQ(x, 0.0);
}

// The upstream gradient of a loss that is not the root scales both gradients.
TEST(LinearCrossEntropy, UpstreamTensorScalesBothGradients) {
  const Tensor h = randn({6, 4}, 1.0), w = randn({9, 4}, 1.0);
  const Tensor y = Tensor::from_vector(random_targets(6, 9, Ignored::some), {6});
  CrossEntropyOptions o;
  o.z_loss_weight = 1e-2;
  const Out want = run_composite(h, w, y, o, -0.75);
  Variable hv(h.clone(), true), wv(w.clone(), true);
  auto r = ops::linear_cross_entropy(hv, wv, y, o, 4);
  r.loss.backward(Tensor::scalar(-0.75, DType::f64));
  EXPECT_TRUE(test::close_rel(hv.grad(), want.dh, 1e-12));
  EXPECT_TRUE(test::close_rel(wv.grad(), want.dw, 1e-12));
}

// Only the inputs that need a gradient get one (a frozen head, or a frozen trunk).
TEST(LinearCrossEntropy, GradientOnlyForInputsThatNeedIt) {
  const Tensor h = randn({6, 4}, 1.0), w = randn({9, 4}, 1.0);
  const Tensor y = Tensor::from_vector(random_targets(6, 9, Ignored::none), {6});
  const Out want = run_composite(h, w, y, {});
  for (bool hg : {false, true}) {
    Variable hv(h.clone(), hg), wv(w.clone(), !hg);
    ops::linear_cross_entropy(hv, wv, y, {}, 2).loss.backward();
    EXPECT_EQ(hv.has_grad(), hg);
    EXPECT_EQ(wv.has_grad(), !hg);
    if (hg) EXPECT_TRUE(test::close_rel(hv.grad(), want.dh, 1e-12));
    else EXPECT_TRUE(test::close_rel(wv.grad(), want.dw, 1e-12));
  }
}

TEST(LinearCrossEntropy, DefaultChunkBound) {
  // At most 1/8 of the bf16 N x V logits: N/8 rows of bf16, N/16 of f32, N/32 of f64.
  EXPECT_EQ(ops::linear_cross_entropy_chunk_rows(16384, 50304, DType::bf16), 2048);
  EXPECT_EQ(ops::linear_cross_entropy_chunk_rows(16384, 50304, DType::f32), 1024);
  EXPECT_EQ(ops::linear_cross_entropy_chunk_rows(8192, 128256, DType::f64), 256);
  EXPECT_EQ(ops::linear_cross_entropy_chunk_rows(7, 11, DType::f64), 1);  // at least one row
  EXPECT_EQ(ops::linear_cross_entropy_chunk_rows(1, 11, DType::bf16), 1);
}

TEST(LinearCrossEntropyErrors, NamesTheProblem) {
  using test::error_of;
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{1, 2}, {2});
  auto call = [&](const Tensor& h, const Tensor& w, CrossEntropyOptions o = {}, int64_t chunk = 0, bool grad = true) {
    return error_of([&] { ops::linear_cross_entropy(Variable(h, grad), Variable(w, grad), y, o, chunk); });
  };
  const Tensor h = randn({2, 4}, 1.0), w = randn({5, 4}, 1.0);
  EXPECT_EQ(call(h, randn({5, 3}, 1.0)),
            "linear_cross_entropy: weight of shape [5, 3] does not match hidden of shape [2, 4] (expected [V_local, 4])");
  EXPECT_EQ(call(h, w.to(DType::f32)), "linear_cross_entropy: weight is f32 but hidden is f64");
  EXPECT_EQ(call(h, w, {}, -1), "linear_cross_entropy: chunk_rows must be >= 0 (0: the default bound), got -1");
  CrossEntropyOptions none;
  none.reduction = Reduction::none;
  EXPECT_NE(call(h, w, none).find("linear_cross_entropy: reduction none is forward only"), std::string::npos);
  EXPECT_EQ(call(h, w, none, 0, false), "(no error)");
  CrossEntropyOptions cap;
  cap.logit_softcap = -2;
  EXPECT_EQ(call(h, w, cap), "linear_cross_entropy: logit_softcap must be finite and >= 0 (0: off), got -2");
  const Tensor bad = Tensor::from_vector(std::vector<int64_t>{1, 5}, {2});
  EXPECT_EQ(error_of([&] { ops::linear_cross_entropy(Variable(h, true), Variable(w, true), bad); }),
            "cross_entropy: target 5 at row 1 is outside [0, 5) (ignore_index is -100)");
}

// Vocab-parallel over 2 Gloo ranks (rank r holds weight rows [r V/2, (r+1) V/2)) equals one
// rank: loss, logging outputs, dhidden (summed over the group) and each rank's dweight shard.
// Padding over part of the last shard and over a whole shard, smoothing with the global sum,
// z-loss, the cap, chunks that do not divide N, an ignored row.
TEST(LinearCrossEntropyTp, TwoRanksEqualOneRank) {
  ZT_REQUIRE_GLOO();
  const int64_t n = 7, c = 6, v = 16, local = v / 2;
  for (DType dt : {DType::f64, DType::f32})
    for (int64_t classes : {int64_t{-1}, int64_t{13}, int64_t{6}})
      for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none})
        for (double cap : {0.0, 4.0}) {
          SCOPED_TRACE(detail::cat(dtype_name(dt), " num_classes ", classes, " ", reduction_name(red), " softcap ",
                                   cap));
          const Tensor h = randn({n, c}, 1.0).to(dt), w = randn({v, c}, 1.0).to(dt);
          std::vector<int64_t> yv = random_targets(n, classes < 0 ? v : classes, Ignored::some);
          const Tensor y = Tensor::from_vector(yv, {n});
          CrossEntropyOptions o;
          o.label_smoothing = 0.1;
          o.z_loss_weight = 1e-2;
          o.logit_softcap = cap;
          o.num_classes = classes;
          o.reduction = red;
          const Out one = run_fused(h, w, y, o, 3);
          const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
          test::run_on_ranks(2, [&](ProcessGroup& g) {
            SCOPED_TRACE(detail::cat("rank ", g.rank()));
            CrossEntropyOptions ro = o;
            ro.group = std::shared_ptr<ProcessGroup>(&g, [](ProcessGroup*) {});  // not owned
            const Tensor shard = w.slice(0, g.rank() * local, (g.rank() + 1) * local).contiguous();
            const Out tp = run_fused(h, shard, y, ro, 3);
            EXPECT_TRUE(test::close_rel(tp.loss, one.loss, tol));
            EXPECT_TRUE(test::close_rel(tp.lse, one.lse, tol));
            EXPECT_TRUE(test::close_rel(tp.z_loss, one.z_loss, tol));
            EXPECT_TRUE(test::close_rel(tp.ce_sum, one.ce_sum, tol));
            EXPECT_EQ(tp.count.item(), one.count.item());
            if (red != Reduction::none) {
              EXPECT_TRUE(test::close_rel(tp.dh, one.dh, tol));
              EXPECT_TRUE(test::close_rel(
                  tp.dw, one.dw.slice(0, g.rank() * local, (g.rank() + 1) * local).contiguous(), tol));
            }
          });
        }
}

// On the GPU against the CPU op on f64 copies of the same (rounded) inputs: GPT-2's padded
// head (the one-read cluster kernel per chunk), the cap (the row kernels), chunks that do not
// divide N, every reduction's forward. Skips without a GPU.
TEST(LinearCrossEntropyCuda, MatchesTheCpuOp) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const Device gpu = Device::cuda(0);
  const int64_t n = 300, c = 64, v = 50304, classes = 50257;
  for (DType dt : {DType::bf16, DType::f32})
    for (double cap : {0.0, 30.0})
      for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none}) {
        SCOPED_TRACE(detail::cat(dtype_name(dt), " softcap ", cap, " ", reduction_name(red)));
        const Tensor h = randn({n, c}, 1.0).to(dt), w = randn({v, c}, 0.3).to(dt);
        const Tensor y = Tensor::from_vector(random_targets(n, classes, Ignored::some), {n});
        CrossEntropyOptions o;
        o.label_smoothing = 0.1;
        o.z_loss_weight = 1e-4;
        o.logit_softcap = cap;
        o.num_classes = classes;
        o.reduction = red;
        const bool grad = red != Reduction::none;
        Variable hv(h.to(gpu), grad), wv(w.to(gpu), grad);
        ops::CrossEntropyResult r = ops::linear_cross_entropy(hv, wv, y.to(gpu), o, 77);
        if (grad) r.loss.backward();
        // The reference: the CPU op in f64 on the same values, except that the GPU rounds the
        // logits to dt (bf16: a relative 4e-3 per logit) before the loss.
        const Out want = run_fused(h.to(DType::f64), w.to(DType::f64), y, o, 0);
        const double tol = dt == DType::bf16 ? 2e-2 : 1e-4;
        EXPECT_TRUE(test::close_rel(r.loss.tensor().to(Device::cpu()), want.loss, tol));
        EXPECT_TRUE(test::close_rel(r.lse.to(Device::cpu()), want.lse, tol));
        EXPECT_EQ(r.count.to(Device::cpu()).item(), want.count.item());
        if (grad) {
          EXPECT_TRUE(test::close_rel(hv.grad().to(Device::cpu()), want.dh, tol));
          EXPECT_TRUE(test::close_rel(wv.grad().to(Device::cpu()), want.dw, tol));
        }
      }
}

}  // namespace
}  // namespace zt
