// Engine tests with tiny test-local ops, so they depend on nothing but the framework.
#include <gtest/gtest.h>

#include "framework/autograd/engine.h"
#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "tests/support/check.h"

namespace zt {
namespace {

// y = a * b elementwise (f64, CPU), counting how often backward runs.
struct MulNode : Node {
  Tensor a, b;
  int* calls;
  MulNode(const Variable& x, const Variable& y, int* c) : Node("mul", {x, y}), a(x.tensor()), b(y.tensor()), calls(c) {}
  std::vector<Tensor> backward(const Tensor& g) override {
    ++*calls;
    Tensor ga = Tensor::empty(a.shape(), DType::f64), gb = Tensor::empty(b.shape(), DType::f64);
    for (int64_t i = 0; i < a.numel(); ++i) {
      ga.data<double>()[i] = g.contiguous().data<double>()[i] * b.data<double>()[i];
      gb.data<double>()[i] = g.contiguous().data<double>()[i] * a.data<double>()[i];
    }
    return {needs_input_grad(0) ? ga : Tensor(), needs_input_grad(1) ? gb : Tensor()};
  }
  void release_saved() override { a = b = Tensor(); }
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
  EXPECT_FALSE(node->a.defined()) << "saved tensors must be released after backward";
  Variable y2 = mul(x, x);
  auto node2 = std::dynamic_pointer_cast<MulNode>(y2.grad_fn());
  sum(y2).backward(1.0, /*retain_graph=*/true);
  EXPECT_TRUE(node2->a.defined());
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

}  // namespace
}  // namespace zt
