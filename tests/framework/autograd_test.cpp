// Engine tests with tiny test-local ops, so they depend on nothing but the framework.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/engine.h"
#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "tests/support/check.h"

namespace zt {
namespace {

// y = a * b elementwise (f64, CPU), counting how often backward runs.
struct MulNode : Node {
  SavedTensor saved_a, saved_b;
  int* calls;
  MulNode(const Variable& x, const Variable& y, int* c)
      : Node("mul", {x, y}), saved_a(x.tensor()), saved_b(y.tensor()), calls(c) {}
  std::vector<Tensor> backward(const Tensor& g) override {
    ++*calls;
    const Tensor &a = saved_a.get(*this), &b = saved_b.get(*this);
    Tensor ga = Tensor::empty(a.shape(), DType::f64), gb = Tensor::empty(b.shape(), DType::f64);
    for (int64_t i = 0; i < a.numel(); ++i) {
      ga.data<double>()[i] = g.contiguous().data<double>()[i] * b.data<double>()[i];
      gb.data<double>()[i] = g.contiguous().data<double>()[i] * a.data<double>()[i];
    }
    return {needs_input_grad(0) ? ga : Tensor(), needs_input_grad(1) ? gb : Tensor()};
  }
  void release_saved() override {
    saved_a.release();
    saved_b.release();
  }
};

int g_calls = 0;

Variable mul(const Variable& x, const Variable& y) {
  Tensor out = Tensor::empty(x.shape(), DType::f64);
  for (int64_t i = 0; i < out.numel(); ++i)
    out.data<double>()[i] = x.tensor().data<double>()[i] * y.tensor().data<double>()[i];
  if (!needs_grad({x, y})) return Variable(out);
  return Variable::from_op(out, std::make_shared<MulNode>(x, y, &g_calls));
}

// Sum to a scalar.
struct SumNode : Node {
  Shape shape;
  explicit SumNode(const Variable& x) : Node("sum", {x}), shape(x.shape()) {}
  std::vector<Tensor> backward(const Tensor& g) override { return {Tensor::full(shape, g.item(), DType::f64)}; }
};
Variable sum(const Variable& x) {
  double s = 0;
  for (double v : x.tensor().to_vector<double>()) s += v;
  Tensor out = Tensor::scalar(s, DType::f64);
  if (!needs_grad({x})) return Variable(out);
  return Variable::from_op(out, std::make_shared<SumNode>(x));
}

Variable leaf(std::vector<double> v, bool rg = true) {
  return Variable(Tensor::from_vector<double>(v, {static_cast<int64_t>(v.size())}), rg);
}

TEST(Autograd, DiamondGraphAccumulates) {
  // x -> a = x*x, b = x*x ... loss = sum(a * b) = sum(x^4): d/dx = 4 x^3
  Variable x = leaf({1, 2, -3});
  Variable a = mul(x, x), b = mul(x, x);
  Variable loss = sum(mul(a, b));
  loss.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{4, 32, -108}));
}

// The leaf-ready hook fires once per leaf, after the leaf's last contribution: x feeds four
// products, w one; each leaf's gradient is final when its hook runs.
TEST(Autograd, LeafReadyHookFiresOnceAfterTheLastContribution) {
  Variable x = leaf({1, 2, -3}), w = leaf({2, 2, 2}), unused = leaf({5});
  Variable loss = sum(mul(mul(mul(x, x), mul(x, x)), w));
  std::vector<std::pair<VariableImpl*, std::vector<double>>> fired;
  {
    LeafGradReadyHookGuard hook([&](VariableImpl& v) { fired.push_back({&v, v.grad.to_vector<double>()}); });
    loss.backward();
  }
  ASSERT_EQ(fired.size(), 2u);
  for (const auto& [impl, grad] : fired) {
    if (impl == x.impl().get()) EXPECT_EQ(grad, (std::vector<double>{8, 64, -216}));  // 4 x^3 w
    else EXPECT_EQ(impl, w.impl().get());
  }
  EXPECT_FALSE(unused.has_grad());
  // No hook outside the guard.
  Variable loss2 = sum(mul(x, x));
  loss2.backward();
  EXPECT_EQ(fired.size(), 2u);
}

// A preassigned gradient buffer (a data-parallel bucket's view) is summed into in place, never
// replaced, even though the bucket shares its storage; zero_grad zeroes it.
TEST(Autograd, PreassignedGradientsAccumulateInPlace) {
  Tensor bucket = Tensor::zeros({8}, DType::f64);
  Variable x = leaf({1, 2, 3}), y = leaf({4, 5});
  x.preassign_grad(bucket.slice(0, 0, 3));
  y.preassign_grad(bucket.slice(0, 4, 6));
  sum(mul(x, x)).backward();
  sum(mul(x, leaf({1, 1, 1}, false))).backward();
  sum(mul(y, y)).backward();
  EXPECT_EQ(bucket.to_vector<double>(), (std::vector<double>{3, 5, 7, 0, 8, 10, 0, 0}));
  EXPECT_EQ(x.grad().data<double>(), bucket.data<double>());  // still the view
  x.zero_grad();
  EXPECT_EQ(bucket.to_vector<double>(), (std::vector<double>{0, 0, 0, 0, 8, 10, 0, 0}));
  EXPECT_EQ(x.grad().data<double>(), bucket.data<double>());
}

TEST(Autograd, ReusedVariableAndRepeatedBackwardAccumulate) {
  Variable x = leaf({3});
  Variable y = mul(x, x);  // x used twice by one node
  sum(y).backward();
  EXPECT_EQ(x.grad().item(), 6);
  sum(mul(x, x)).backward();  // leaf gradients accumulate across backward calls
  EXPECT_EQ(x.grad().item(), 12);
  x.zero_grad();
  EXPECT_FALSE(x.has_grad());
}

TEST(Autograd, SeedScalesGradient) {
  Variable x = leaf({2});
  sum(mul(x, x)).backward(0.5);
  EXPECT_EQ(x.grad().item(), 2);
}

TEST(Autograd, NoGradScopeBuildsNoGraph) {
  Variable x = leaf({2});
  {
    NoGradGuard ng;
    Variable y = mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_THROW(y.backward(), Error);
  }
  EXPECT_TRUE(mul(x, x).requires_grad());
}

TEST(Autograd, InputsWithoutGradGetNone) {
  Variable x = leaf({2}), c = leaf({5}, false);
  sum(mul(x, c)).backward();
  EXPECT_EQ(x.grad().item(), 5);
  EXPECT_FALSE(c.has_grad());
}

TEST(Autograd, BranchWithoutGradientStillReleasesUpstream) {
  // y = x*x feeds two consumers: the product below, and `b`, a node that receives no
  // gradient at all (its only consumer `a` returns none). The engine must still count b as
  // done so y runs: x.grad = d(a * y)/dx with a held constant = a * 2x.
  struct StopNode : Node {
    explicit StopNode(const Variable& v) : Node("stop", {v}) {}
    std::vector<Tensor> backward(const Tensor&) override { return {Tensor()}; }
  };
  auto stop = [](const Variable& v) { return Variable::from_op(v.tensor().clone(), std::make_shared<StopNode>(v)); };
  Variable x = leaf({3});
  Variable y = mul(x, x);  // 9
  Variable b = stop(y);    // gets no gradient
  Variable a = stop(b);    // gets a gradient, passes none to b
  sum(mul(a, y)).backward();
  ASSERT_TRUE(x.has_grad());
  EXPECT_EQ(x.grad().item(), 9 * 6);
}

TEST(Autograd, FreesSavedBuffersAfterBackward) {
  Variable x = leaf({1, 2});
  Variable y = mul(x, x);
  auto node = std::dynamic_pointer_cast<MulNode>(y.grad_fn());
  ASSERT_TRUE(node);
  sum(y).backward();
  EXPECT_FALSE(node->saved_a.defined()) << "saved tensors must be released after backward";
  Variable y2 = mul(x, x);
  auto node2 = std::dynamic_pointer_cast<MulNode>(y2.grad_fn());
  sum(y2).backward(1.0, /*retain_graph=*/true);
  EXPECT_TRUE(node2->saved_a.defined());
}

// ---- version counters and released graphs (framework/autograd/saved_tensor.h) ------------

// Every in-place write of Tensor (and a write through a view sharing the storage) after the
// node saved its input makes that node's backward an error naming it, not a wrong gradient.
TEST(Autograd, SavedTensorWrittenInPlaceIsAnErrorNamingTheOp) {
  const std::vector<std::pair<std::string, std::function<void(Tensor&)>>> writes = {
      {"fill_", [](Tensor& t) { t.fill_(5); }},
      {"add_", [](Tensor& t) { t.add_(Tensor::full(t.shape(), 1, DType::f64)); }},
      {"scale_", [](Tensor& t) { t.scale_(2); }},
      {"copy_", [](Tensor& t) { t.copy_(Tensor::zeros(t.shape(), DType::f64)); }},
      {"copy_ into a view", [](Tensor& t) { t.slice(0, 1, 2).copy_(Tensor::zeros({1}, DType::f64)); }},
      {"bump_version", [](Tensor& t) { t.storage()->bump_version(); }},
  };
  for (const auto& [name, write] : writes) {
    SCOPED_TRACE(name);
    Variable x = leaf({1, 2});
    Variable loss = sum(mul(x, leaf({3, 4})));
    write(x.tensor());
    const std::string msg = test::error_of([&] { loss.backward(); });
    EXPECT_NE(msg.find("backward of 'mul': a tensor it saved (shape [2], f64) was modified in place (version "),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find(", saved at "), std::string::npos) << msg;
    EXPECT_FALSE(x.has_grad());
  }
}

TEST(Autograd, WritesBeforeTheNodeSavedOrToOtherStoragesAreFine) {
  Variable x = leaf({1, 2});
  x.tensor().fill_(3);  // before mul saves it
  Variable c = leaf({3, 4}, false);
  Variable loss = sum(mul(x, c));
  Tensor other = x.tensor().clone();
  other.fill_(7);  // a copy: another storage
  loss.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3, 4}));
}

TEST(Autograd, SecondBackwardThroughAReleasedGraphIsAnError) {
  Variable x = leaf({1, 2});
  Variable loss = sum(mul(x, x));
  loss.backward();
  const std::string msg = test::error_of([&] { loss.backward(); });
  EXPECT_NE(msg.find("backward of 'mul': its saved tensors were already freed by an earlier backward"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("retain_graph=true"), std::string::npos) << msg;
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 4})) << "the failed backward added nothing";

  Variable y = leaf({1, 2});
  Variable kept = sum(mul(y, y));
  kept.backward(1.0, /*retain_graph=*/true);
  kept.backward();  // allowed once more, and it releases
  EXPECT_EQ(y.grad().to_vector<double>(), (std::vector<double>{4, 8}));
  EXPECT_THROW(kept.backward(), Error);
}

TEST(Autograd, ClearErrors) {
  Variable x = leaf({1, 2});
  Variable y = mul(x, x);
  try {
    y.backward();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-scalar"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(y.backward(Tensor::zeros({3}, DType::f64)), Error);
  EXPECT_THROW(leaf({1}, false).backward(), Error);
  EXPECT_THROW(Variable(Tensor::zeros({1}, DType::i64), true), Error);
}

TEST(Autograd, GradcheckHelperCatchesWrongGradient) {
  // A node with a deliberately wrong backward must fail gradcheck: the check can fail.
  struct WrongNode : Node {
    explicit WrongNode(const Variable& v) : Node("wrong", {v}) {}
    std::vector<Tensor> backward(const Tensor& g) override {
      Tensor r = g.clone();
      r.scale_(1.5);
      return {r};
    }
  };
  auto f = [](const std::vector<Variable>& in) {
    return Variable::from_op(in[0].tensor().clone(), std::make_shared<WrongNode>(in[0]));
  };
  Generator gen(3);
  EXPECT_FALSE(test::gradcheck(f, {Tensor::randn({4}, DType::f64, gen)}));
  auto square = [](const std::vector<Variable>& in) { return mul(in[0], in[0]); };
  EXPECT_TRUE(test::gradcheck(square, {Tensor::randn({4}, DType::f64, gen)}));
}

// y = a + b (f64, CPU); backward hands the same buffer to both inputs, as ops::add does.
struct TwinNode : Node {
  TwinNode(const Variable& a, const Variable& b) : Node("twin", {a, b}) {}
  std::vector<Tensor> backward(const Tensor& g) override { return {g, g}; }
};
Variable twin(const Variable& a, const Variable& b) {
  Tensor out = a.tensor().clone();
  out.add_(b.tensor());
  return Variable::from_op(out, std::make_shared<TwinNode>(a, b));
}

TEST(Autograd, SharedGradientBufferIsNeverSummedInPlace) {
  // loss = sum(twin(x*x, twin(x, x))) = sum(x^2 + 2x): d/dx = 2x + 2. The outer twin hands
  // one buffer to both x*x and the inner twin; the inner twin runs first (the ready stack
  // is last in, first out) and hands that same buffer twice to x. Summing the second into
  // the first in place would double the buffer x*x has not read yet (x.grad = 14, not 8).
  Variable x = leaf({3, -2});
  sum(twin(mul(x, x), twin(x, x))).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{8, -2}));
}

// y = 3 a, folding: when a's producer already holds another consumer's gradient, the node
// returns that gradient + 3 g, marked summed, and records what it was offered.
struct TripleFoldingNode : Node {
  std::vector<Tensor>* offered;
  TripleFoldingNode(const Variable& a, std::vector<Tensor>* o) : Node("triple", {a}), offered(o) {}
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor r = g.clone();
    r.scale_(3.0);
    return {r};
  }
  bool folds_gradients() const override { return true; }
  std::vector<Tensor> backward_folding(const Tensor& g, const std::vector<Tensor>& addends,
                                       std::vector<bool>& summed) override {
    offered->push_back(addends.at(0));
    std::vector<Tensor> out = backward(g);
    if (addends[0].defined()) {
      out[0].add_(addends[0]);
      summed[0] = true;
    }
    return out;
  }
};
Variable triple(const Variable& a, std::vector<Tensor>* offered) {
  Tensor out = a.tensor().clone();
  out.scale_(3.0);
  return Variable::from_op(out, std::make_shared<TripleFoldingNode>(a, offered));
}

TEST(Autograd, FoldingNodeSumsTheGradientAlreadyThere) {
  // loss = sum(twin(triple(u), u)), u = x*x: 4 sum(x^2), d/dx = 8x. twin hands its gradient
  // to triple and to u's node; triple runs while u's node still waits for it, so it is
  // offered twin's gradient of u and returns the sum: no separate accumulation.
  std::vector<Tensor> offered;
  Variable x = leaf({3, -2});
  Variable u = mul(x, x);
  sum(twin(triple(u, &offered), u)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{24, -16}));
  ASSERT_EQ(offered.size(), 1u);
  ASSERT_TRUE(offered[0].defined());
  EXPECT_EQ(offered[0].to_vector<double>(), (std::vector<double>{1, 1}));
  EXPECT_EQ(last_backward_stats().folded, 1);
  EXPECT_EQ(last_backward_stats().accumulated, 1);  // only x*x's two contributions to the leaf x
}

TEST(Autograd, FoldingNodeIsOfferedNothingWithoutAnotherGradient) {
  std::vector<Tensor> offered;
  {  // the only consumer: nothing to fold
    Variable x = leaf({3, -2});
    sum(triple(mul(x, x), &offered)).backward();
    EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{18, -12}));
  }
  {  // a leaf input: its sum is the engine's leaf path, never offered
    Variable x = leaf({3, -2});
    sum(twin(triple(x, &offered), x)).backward();
    EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{4, 4}));
  }
  ASSERT_EQ(offered.size(), 2u);
  EXPECT_FALSE(offered[0].defined());
  EXPECT_FALSE(offered[1].defined());
  EXPECT_EQ(last_backward_stats().folded, 0);
  EXPECT_EQ(last_backward_stats().accumulated, 1);  // x's two leaf contributions
}

TEST(Autograd, SavedTensorReturnedAsGradientIsNeverSummedInPlace) {
  // A node whose seeded backward returns a tensor it keeps (cross-entropy hands back its
  // fused gradient this way). With retain_graph the leaf's gradient aliases that saved
  // tensor after the first backward; the later sums must leave it alone.
  struct DotNode : Node {
    Tensor w;
    DotNode(const Variable& x, Tensor w_) : Node("dot", {x}), w(std::move(w_)) {}
    std::vector<Tensor> backward(const Tensor& g) override {
      Tensor r = w.clone();
      r.scale_(g.item());
      return {r};
    }
    std::vector<Tensor> backward_seeded(double seed, const Tensor& out) override {
      return seed == 1.0 ? std::vector<Tensor>{w} : backward(Tensor::scalar(seed, DType::f64));
    }
  };
  Variable x = leaf({1, 2, 3});
  const Tensor w = Tensor::from_vector<double>({0.5, -1, 4}, {3});
  auto node = std::make_shared<DotNode>(x, w.clone());
  Variable loss = Variable::from_op(Tensor::scalar(0, DType::f64), node);
  for (int i = 0; i < 3; ++i) loss.backward(1.0, /*retain_graph=*/true);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1.5, -3, 12}));
  EXPECT_EQ(node->w.to_vector<double>(), w.to_vector<double>()) << "the node's saved tensor changed";
}

TEST(Autograd, ExclusivelyOwnedGradientIsSummedInPlace) {
  // The saving the rule exists for: a gradient only the engine holds is summed where it lies.
  Variable x = leaf({3, -1});
  sum(mul(x, x)).backward();
  const void* first = x.grad().raw_data();
  sum(mul(x, x)).backward();
  EXPECT_EQ(x.grad().raw_data(), first) << "the leaf's own gradient buffer was copied";
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{12, -4}));
}

TEST(Autograd, AccumulateCopiesWhenTheSlotIsSharedOrStrided) {
  Generator gen(11);
  const Tensor g = Tensor::randn({2, 3}, DType::f64, gen);
  const std::vector<double> gv = g.to_vector<double>();
  auto expect_sum = [&](const Tensor& slot, const std::vector<double>& before) {
    const std::vector<double> after = slot.to_vector<double>();
    ASSERT_EQ(after.size(), before.size());
    for (size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i], before[i] + gv[i]) << i;
  };
  {  // a view of a tensor someone else holds: the holder must not see the sum
    const Tensor base = Tensor::randn({4, 3}, DType::f64, gen);
    const std::vector<double> base_before = base.to_vector<double>();
    Tensor slot = base.slice(0, 1, 3);
    const std::vector<double> before = slot.to_vector<double>();
    accumulate_grad(slot, g);
    expect_sum(slot, before);
    EXPECT_EQ(base.to_vector<double>(), base_before);
    EXPECT_FALSE(slot.shares_storage(base));
  }
  {  // a strided slot that nobody else holds: copied too (sums go to contiguous buffers)
    Tensor slot = Tensor::randn({3, 2}, DType::f64, gen).transpose(0, 1);
    EXPECT_FALSE(exclusively_owned(slot));
    const std::vector<double> before = slot.to_vector<double>();
    accumulate_grad(slot, g);
    expect_sum(slot, before);
    EXPECT_TRUE(slot.is_contiguous());
  }
  {  // a shared slot and a gradient the engine alone holds: summed into the gradient's buffer
    const Tensor other_holder = Tensor::randn({2, 3}, DType::f64, gen);
    const std::vector<double> before = other_holder.to_vector<double>();
    Tensor slot = other_holder;
    Tensor fresh = g.clone();
    const void* p = fresh.raw_data();
    accumulate_grad(slot, std::move(fresh));
    expect_sum(slot, before);
    EXPECT_EQ(slot.raw_data(), p);
    EXPECT_EQ(other_holder.to_vector<double>(), before);
  }
  {  // owned outright: in place
    Tensor slot = Tensor::randn({2, 3}, DType::f64, gen);
    EXPECT_TRUE(exclusively_owned(slot));
    const void* p = slot.raw_data();
    const std::vector<double> before = slot.to_vector<double>();
    accumulate_grad(slot, g);
    expect_sum(slot, before);
    EXPECT_EQ(slot.raw_data(), p);
  }
}

}  // namespace
}  // namespace zt
