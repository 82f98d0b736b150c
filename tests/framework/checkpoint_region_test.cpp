// Checkpoint regions (framework/autograd/checkpoint.h) against running the same function without
// one: the loss and every gradient bit for bit (f32 and bf16 compute, dropout, a residual stream
// whose gradient a norm folds, gradients accumulated over two backwards), the leaf-ready hook's
// calls, nesting, no-grad mode and the errors. Real ops, so the folding and the mixed-precision
// paths are the ones models take.
#include "framework/autograd/checkpoint.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "framework/autograd/engine.h"
#include "framework/autograd/grad_mode.h"
#include "ops/cast.h"
#include "ops/dropout.h"
#include "ops/elementwise.h"
#include "ops/gelu.h"
#include "ops/layernorm.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "tests/support/check.h"

namespace zt {
namespace {

constexpr int64_t kRows = 6, kWidth = 8;

struct Params {
  Variable w0, g, beta, w1, b1, w2;
  std::vector<Variable> all() const { return {w0, g, beta, w1, b1, w2}; }
};

Params make_params(uint64_t seed) {
  Generator gen(seed);
  auto p = [&](const Shape& s, double std, double mean = 0) {
    return Variable(Tensor::randn(s, DType::f32, gen, mean, std), true);
  };
  return {p({kWidth, kWidth}, 0.3), p({kWidth}, 0.1, 1.0), p({kWidth}, 0.1), p({2 * kWidth, kWidth}, 0.3),
          p({2 * kWidth}, 0.1), p({kWidth, 2 * kWidth}, 0.3)};
}

// A pre-norm residual block: x + dropout(w2 gelu(w1 layernorm(x) + b1)). The layernorm's
// backward folds the residual's gradient into dx (Node::folds_gradients).
Variable block(const Params& p, const Variable& x, DType compute, double dropout, Generator& gen) {
  auto c = [&](const Variable& v) { return ops::cast(v, compute); };
  const Variable h = ops::gelu(ops::linear(ops::layernorm(x, c(p.g), c(p.beta)), c(p.w1), c(p.b1)));
  return ops::add(x, ops::dropout(ops::linear(h, c(p.w2)), dropout, gen));
}

enum class Mode { none, region, nested };

struct Outcome {
  Tensor loss;
  std::vector<Tensor> grads;  // the params', then the input's
  Generator::State gen_after;
  BackwardStats stats;
};

// Input x0 -> linear (so the block's input has a producer) -> two blocks -> sum of squares;
// backward twice so the second adds into existing gradients.
Outcome run(Mode mode, DType compute, double dropout) {
  const Params p = make_params(7);
  Generator data(3), gen(11);
  Variable x0(Tensor::randn({kRows, kWidth}, DType::f32, data), true);
  Outcome r;
  for (int pass = 0; pass < 2; ++pass) {
    Variable x = ops::linear(ops::cast(x0, compute), ops::cast(p.w0, compute));
    for (int b = 0; b < 2; ++b) {
      auto fn = [&p, compute, dropout, &gen](const std::vector<Variable>& in) {
        return block(p, in[0], compute, dropout, gen);
      };
      if (mode == Mode::none) {
        x = fn({x});
      } else if (mode == Mode::region) {
        x = checkpoint(fn, {x}, {&gen});
      } else {  // the block inside a region inside a region
        x = checkpoint([fn, &gen](const std::vector<Variable>& in) { return checkpoint(fn, in, {&gen}); }, {x},
                       {&gen});
      }
    }
    Variable loss = ops::sum(ops::mul(x, x));
    loss.backward();
    r.loss = loss.tensor().clone();
    r.stats = last_backward_stats();
  }
  for (const Variable& v : p.all()) r.grads.push_back(v.grad());
  r.grads.push_back(x0.grad());
  r.gen_after = gen.state();
  return r;
}

void expect_same(const Outcome& a, const Outcome& b) {
  EXPECT_TRUE(test::same_bits(a.loss, b.loss));
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) EXPECT_TRUE(test::same_bits(a.grads[i], b.grads[i])) << "gradient " << i;
  EXPECT_EQ(std::vector<uint64_t>(a.gen_after.s, a.gen_after.s + 4), std::vector<uint64_t>(b.gen_after.s, b.gen_after.s + 4))
      << "the draws after the regions moved";
  EXPECT_EQ(a.stats.accumulated, b.stats.accumulated);
  EXPECT_EQ(a.stats.folded, b.stats.folded);
}

TEST(Checkpoint, SameBitsAsWithoutRegionF32WithDropout) {
  const Outcome none = run(Mode::none, DType::f32, 0.25);
  EXPECT_GT(none.stats.folded, 0) << "the layernorm should fold the residual gradient";
  expect_same(run(Mode::region, DType::f32, 0.25), none);
}

TEST(Checkpoint, SameBitsAsWithoutRegionBf16Compute) {
  // bf16 compute: the f32 parameters' cached bf16 copies feed the recomputation, and their
  // bf16 gradients are widened into the f32 .grad with the outer backward's.
  const Outcome none = run(Mode::none, DType::bf16, 0.25);
  EXPECT_EQ(none.loss.dtype(), DType::bf16);
  expect_same(run(Mode::region, DType::bf16, 0.25), none);
}

TEST(Checkpoint, NestedRegionsKeepTheBits) {
  expect_same(run(Mode::nested, DType::f32, 0.25), run(Mode::none, DType::f32, 0.25));
  expect_same(run(Mode::nested, DType::bf16, 0.0), run(Mode::none, DType::bf16, 0.0));
}

TEST(Checkpoint, RetainedGraphRecomputesOnEachBackward) {
  Generator gen(5);
  const Params p = make_params(2);
  Variable x(Tensor::randn({kRows, kWidth}, DType::f32, gen), true);
  Generator drop(9), drop_ref(9);
  Variable y = ops::sum(checkpoint([&](const std::vector<Variable>& in) { return block(p, in[0], DType::f32, 0.5, drop); },
                                   {x}, {&drop}));
  y.backward(1.0, /*retain_graph=*/true);
  y.backward(1.0, /*retain_graph=*/true);
  const Tensor twice = x.grad().clone();
  x.zero_grad();
  Variable y_ref = ops::sum(block(p, x, DType::f32, 0.5, drop_ref));
  y_ref.backward(1.0, true);
  y_ref.backward(1.0, true);
  EXPECT_TRUE(test::same_bits(twice, x.grad()));
}

// The hook's calls (which leaf, its gradient then) with and without regions: the leaf-ready
// hook fires once per leaf, after its last contribution, also for a parameter read inside two
// regions and outside them (w0), and for one read by two regions (every block parameter).
std::vector<std::pair<std::string, Tensor>> hook_calls(bool regions, DType compute) {
  Params p = make_params(4);
  std::map<const VariableImpl*, std::string> names;
  const std::vector<Variable> all = p.all();
  for (size_t i = 0; i < all.size(); ++i) names[all[i].impl().get()] = "param " + std::to_string(i);
  Generator data(1), gen(2);
  Variable x0(Tensor::randn({kRows, kWidth}, DType::f32, data), true);
  names[x0.impl().get()] = "x0";
  Variable x = ops::gelu(ops::cast(x0, compute));
  for (int b = 0; b < 2; ++b) {
    // w0 is read inside each region (a second product on the residual stream) and by the head
    // after them, whose backward runs first: reported after the head, it would be early.
    auto fn = [&p, &gen, compute](const std::vector<Variable>& in) {
      return ops::linear(block(p, in[0], compute, 0.25, gen), ops::cast(p.w0, compute));
    };
    x = regions ? checkpoint(fn, {x}, {&gen}) : fn({x});
  }
  x = ops::linear(x, ops::cast(p.w0, compute));
  std::vector<std::pair<std::string, Tensor>> calls;
  {
    LeafGradReadyHookGuard hook([&](VariableImpl& v) { calls.push_back({names.at(&v), v.grad.clone()}); });
    ops::sum(ops::mul(x, x)).backward();
  }
  for (const Variable& v : all) EXPECT_TRUE(v.has_grad());
  return calls;
}

// In bf16 the leaves' gradients arrive in bf16 and are widened into their f32 .grad just before
// the hook: the region's join the outer backward's list, so they are widened in time too.
TEST(Checkpoint, LeafReadyHookFiresOncePerLeafWithItsFinalGradient) {
  for (DType compute : {DType::f32, DType::bf16}) {
    const auto none = hook_calls(false, compute), regions = hook_calls(true, compute);
    ASSERT_EQ(none.size(), 7u);  // six parameters and the input
    ASSERT_EQ(regions.size(), none.size()) << dtype_name(compute);
    std::map<std::string, Tensor> by_name;
    for (const auto& [name, grad] : none) EXPECT_TRUE(by_name.emplace(name, grad).second) << name << " reported twice";
    for (const auto& [name, grad] : regions) {
      ASSERT_TRUE(by_name.count(name)) << name;
      EXPECT_TRUE(test::same_bits(grad, by_name.at(name)))
          << name << " was reported before its final gradient (" << dtype_name(compute) << ")";
      by_name.erase(name);  // a second report fails the count above
    }
  }
}

TEST(Checkpoint, NoGradModeJustRunsTheFunction) {
  const Params p = make_params(3);
  Generator gen(1);
  Variable x(Tensor::randn({kRows, kWidth}, DType::f32, gen), true);
  int calls = 0;
  NoGradGuard no_grad;
  Variable y = checkpoint(
      [&](const std::vector<Variable>& in) {
        ++calls;
        return block(p, in[0], DType::f32, 0.0, gen);
      },
      {x});
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(test::same_bits(y.tensor(), block(p, x, DType::f32, 0.0, gen).tensor()));
}

TEST(Checkpoint, NothingToDifferentiateGivesAPlainValue) {
  Generator gen(1);
  Variable x(Tensor::randn({kRows, kWidth}, DType::f32, gen));
  Variable w(Tensor::randn({kWidth, kWidth}, DType::f32, gen));  // requires no gradient
  Variable y = checkpoint([&](const std::vector<Variable>& in) { return ops::linear(in[0], w); }, {x});
  EXPECT_FALSE(y.requires_grad());
}

TEST(Checkpoint, ClearErrors) {
  Generator gen(1);
  Variable x(Tensor::randn({kRows, kWidth}, DType::f32, gen), true);
  const Variable outside = ops::gelu(x);  // has a graph
  EXPECT_NE(test::error_of([&] {
              checkpoint([&](const std::vector<Variable>& in) { return ops::add(in[0], outside); }, {x});
            }).find("not one of the region's inputs"),
            std::string::npos);

  // A function that draws differently the second time.
  int calls = 0;
  Variable y = checkpoint(
      [&](const std::vector<Variable>& in) {
        if (calls++ > 0) gen.next_u64();
        return ops::gelu(in[0]);
      },
      {x}, {&gen});
  EXPECT_NE(test::error_of([&] { ops::sum(y).backward(); }).find("fn must be deterministic"), std::string::npos);

  // A second backward through a released region.
  Variable z = ops::sum(checkpoint([](const std::vector<Variable>& in) { return ops::gelu(in[0]); }, {x}));
  z.backward();
  EXPECT_NE(test::error_of([&] { z.backward(); }).find("already freed"), std::string::npos);
}

}  // namespace
}  // namespace zt
