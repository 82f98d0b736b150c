// ops/cast.h: the compute copy of a leaf is reused while the leaf is unchanged and made
// again after any write (Tensor's in-place methods, a new data tensor, an AdamW step);
// gradients reach the f32 master; a GPT forward after an optimizer step sees the new weights.
#include "ops/cast.h"

#include <gtest/gtest.h>

#include "framework/autograd/grad_mode.h"

#include "models/gpt.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "tests/support/check.h"
#include "trainers/adamw.h"

namespace zt {
namespace {

Tensor random(const Shape& shape, DType dtype = DType::f32) {
  return Tensor::randn(shape, dtype, test::test_generator());
}

// The cast of x equals a fresh conversion of x's current data, bit for bit.
::testing::AssertionResult is_fresh_cast(const Variable& y, const Variable& x) {
  return test::close_rel(y.tensor(), x.tensor().to(y.dtype()), 0);
}

TEST(Cast, LeafCopyIsReusedUntilTheLeafChanges) {
  for (DType to : {DType::bf16, DType::f64}) {
    Variable x(random({37, 5}), true, "w");
    const Variable first = ops::cast(x, to);
    EXPECT_EQ(first.dtype(), to);
    EXPECT_TRUE(is_fresh_cast(first, x));
    EXPECT_TRUE(ops::cast(x, to).tensor().shares_storage(first.tensor())) << "an unchanged leaf was cast again";

    // Every way of writing the leaf gives a fresh copy with the new values.
    const Tensor big = random({74, 5});
    const std::vector<std::pair<const char*, std::function<void()>>> writes = {
        {"add_", [&] { x.tensor().add_(random({37, 5}), 0.5); }},
        {"scale_", [&] { x.tensor().scale_(-1.5); }},
        {"fill_", [&] { x.tensor().fill_(0.25); }},
        {"copy_", [&] { x.tensor().copy_(random({37, 5})); }},
        {"copy_ into a view", [&] { x.tensor().slice(0, 3, 4).copy_(random({1, 5})); }},
        {"new data", [&] { x.tensor() = random({37, 5}); }},
        {"a view of a larger tensor", [&] { x.tensor() = big.slice(0, 0, 37); }},
        {"another view of that storage", [&] { x.tensor() = big.slice(0, 37, 74); }},
    };
    Variable previous = first;
    for (const auto& [what, write] : writes) {
      write();
      const Variable y = ops::cast(x, to);
      EXPECT_FALSE(y.tensor().shares_storage(previous.tensor())) << what;
      EXPECT_TRUE(is_fresh_cast(y, x)) << what;
      previous = y;
    }
    // Switching dtypes back and forth is still right.
    const DType other = to == DType::bf16 ? DType::f64 : DType::bf16;
    EXPECT_TRUE(is_fresh_cast(ops::cast(x, other), x));
    EXPECT_TRUE(is_fresh_cast(ops::cast(x, to), x));
  }
}

TEST(Cast, NonLeafIsCastEveryTime) {
  Variable x(random({4, 3}), true);
  Variable h = ops::scale(x, 2.0);
  EXPECT_FALSE(ops::cast(h, DType::f64).tensor().shares_storage(ops::cast(h, DType::f64).tensor()));
}

TEST(Cast, GradientsReachTheMasterThroughTheCachedCopy) {
  // loss = sum(cast(x) * c) twice (the second forward reuses the copy): x.grad = 2 c, in f32.
  Variable x(random({6, 4}), true);
  const Tensor c = random({6, 4}, DType::f64);
  for (int i = 0; i < 2; ++i) ops::sum(ops::mul(ops::cast(x, DType::f64), Variable(c))).backward();
  ASSERT_TRUE(x.has_grad());
  EXPECT_EQ(x.grad().dtype(), DType::f32);
  Tensor want = c.clone();
  want.scale_(2.0);
  EXPECT_TRUE(test::close_rel(x.grad(), want, 1e-6));
}

// Logits that are the cached cast of a leaf: the cross-entropy writes its gradient into the
// cached copy in place. The next cast must not hand back those gradient values, and a node
// that saved the copy must refuse to backpropagate through them.
TEST(Cast, CrossEntropyGradientWrittenIntoTheCachedCopyIsNotReused) {
  for (DType to : {DType::bf16, DType::f64}) {
    SCOPED_TRACE(dtype_name(to));
    Variable x(random({4, 16}), true, "w");
    const Tensor targets = Tensor::from_vector<int64_t>({1, 5, 9, 15}, {4});
    const Variable logits = ops::cast(x, to);
    ops::cross_entropy(logits, targets).loss.backward();
    ASSERT_TRUE(x.has_grad());
    EXPECT_TRUE(is_fresh_cast(ops::cast(x, to), x)) << "the cached copy now holds the gradient";

    const Variable copy = ops::cast(x, to);
    Variable saved_by_mul = ops::sum(ops::mul(copy, copy));  // mul saves the copy
    ops::cross_entropy(copy, targets);                       // overwrites it in place
    const std::string msg = test::error_of([&] { saved_by_mul.backward(); });
    EXPECT_NE(msg.find("backward of 'mul': a tensor it saved"), std::string::npos) << msg;
  }
}

// A compute-resident leaf (mixed_precision.h: its data the bf16 weights, its master kept
// elsewhere) takes its master's graph: cast makes the node without a copy, and the gradients
// widen into an f32 .grad exactly as a master's do: the same bits, a cast used twice and two
// casts, over two backwards, also into a preassigned f32 buffer; a direct use widens too.
TEST(Cast, ComputeResidentLeafTakesItsMastersGraphAndF32Gradient) {
  const Tensor master = random({6, 5});
  const Tensor c1 = random({6, 5}, DType::bf16), c2 = random({6, 5}, DType::bf16), c3 = random({6, 5}, DType::bf16);
  auto loss_of = [&](const Variable& w) {
    const Variable shared = ops::cast(w, DType::bf16);
    Variable loss = ops::sum(ops::mul(shared, Variable(c1)));
    loss = ops::add(loss, ops::sum(ops::mul(shared, Variable(c2))));
    return ops::add(loss, ops::sum(ops::mul(ops::cast(w, DType::bf16), Variable(c3))));
  };
  for (bool preassigned : {false, true}) {
    SCOPED_TRACE(preassigned ? "preassigned" : "allocated");
    Variable x(master.clone(), true, "x");
    Variable y(master.clone(), true, "y");
    make_compute_resident(*y.impl(), master.to(DType::bf16));
    EXPECT_TRUE(is_compute_resident(*y.impl()));
    EXPECT_EQ(y.dtype(), DType::bf16);
    EXPECT_EQ(leaf_grad_dtype(*y.impl()), DType::f32);
    EXPECT_EQ(leaf_grad_dtype(*x.impl()), DType::f32);
    const Variable cy = ops::cast(y, DType::bf16);
    EXPECT_TRUE(cy.tensor().shares_storage(y.tensor())) << "no copy of the resident weights";
    EXPECT_FALSE(cy.is_leaf()) << "the cast node of a master";
    if (preassigned) {
      x.preassign_grad(Tensor::zeros({6, 5}, DType::f32));
      y.preassign_grad(Tensor::zeros({6, 5}, DType::f32));
    }
    for (int pass = 0; pass < 2; ++pass) {
      loss_of(x).backward();
      loss_of(y).backward();
    }
    ASSERT_TRUE(y.has_grad());
    EXPECT_EQ(y.grad().dtype(), DType::f32);
    EXPECT_TRUE(test::close_rel(y.grad(), x.grad(), 0));
  }
  // Used without a cast: the bf16 gradient still widens into .grad.
  Variable y(master.clone(), true, "y");
  make_compute_resident(*y.impl(), master.to(DType::bf16));
  ops::sum(ops::mul(y, Variable(c1))).backward();
  EXPECT_EQ(y.grad().dtype(), DType::f32);
  EXPECT_TRUE(test::close_rel(y.grad(), c1.to(DType::f32), 0));
  // Without grad mode a cast hands the weights back as they are.
  {
    NoGradGuard no_grad;
    EXPECT_TRUE(ops::cast(y, DType::bf16).tensor().shares_storage(y.tensor()));
  }
  // Its gradient buffer is f32, its weights narrower than the master, of its shape.
  EXPECT_NE(test::error_of([&] { y.preassign_grad(Tensor::zeros({6, 5}, DType::bf16)); }).find("f32"), std::string::npos);
  Variable z(master.clone(), true, "z");
  EXPECT_NE(test::error_of([&] { make_compute_resident(*z.impl(), master.clone()); }).find("narrower"), std::string::npos);
  EXPECT_NE(test::error_of([&] { make_compute_resident(*z.impl(), Tensor::zeros({5, 6}, DType::bf16)); }).find("[5, 6]"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { make_compute_resident(*ops::scale(z, 2.0).impl(), master.to(DType::bf16)); })
                .find("is not a leaf"),
            std::string::npos);
}

TEST(Cast, CudaBf16GradientsReachTheF32MastersThroughTheBatchedConversion) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  // Many f32 leaves, each cast to bf16 once per forward (the engine widens their bf16
  // gradients in one multi-tensor kernel; the second backward accumulates in place), and one
  // leaf cast twice in the same graph (its two gradients take the one-by-one path). With
  // loss = sum(cast(x) * c), x.grad = (number of uses) * c: exact, c being bf16.
  const Device gpu = Device::cuda(0);
  std::vector<Variable> xs;
  std::vector<Tensor> cs;
  for (int64_t n : {1, 8, 37, 2048, 5000, 70001}) {
    xs.emplace_back(Tensor::randn({n}, DType::f32, test::test_generator(), 0, 1, gpu), true);
    cs.push_back(Tensor::randn({n}, DType::bf16, test::test_generator(), 0, 1, gpu));
  }
  Variable twice(Tensor::randn({300}, DType::f32, test::test_generator(), 0, 1, gpu), true);
  const Tensor c_twice = Tensor::randn({300}, DType::bf16, test::test_generator(), 0, 1, gpu);
  for (int pass = 0; pass < 2; ++pass) {
    Variable loss = ops::sum(ops::mul(ops::cast(twice, DType::bf16), Variable(c_twice)));
    loss = ops::add(loss, ops::sum(ops::mul(ops::cast(twice, DType::bf16), Variable(c_twice))));
    for (size_t i = 0; i < xs.size(); ++i) loss = ops::add(loss, ops::sum(ops::mul(ops::cast(xs[i], DType::bf16), Variable(cs[i]))));
    loss.backward();
  }
  for (size_t i = 0; i < xs.size(); ++i) {
    ASSERT_TRUE(xs[i].has_grad());
    EXPECT_EQ(xs[i].grad().dtype(), DType::f32);
    EXPECT_EQ(xs[i].grad().device(), gpu);
    Tensor want = cs[i].to(Device::cpu()).to(DType::f32);
    want.scale_(2.0);
    EXPECT_TRUE(test::close_rel(xs[i].grad().to(Device::cpu()), want, 0)) << "leaf " << i;
  }
  Tensor want = c_twice.to(Device::cpu()).to(DType::f32);
  want.scale_(4.0);
  EXPECT_TRUE(test::close_rel(twice.grad().to(Device::cpu()), want, 0));
}

// A bf16 forward, a step, a second forward: its logits must equal those of a fresh model
// holding the stepped weights (no copy left over from before the step). On CUDA the AdamW
// kernel rewrites the cached bf16 copies itself (trainers/optim_cuda.h); `refreshed` then
// says every cached copy was marked current by the step, so the path was taken.
void check_forward_after_step(Device device, bool* refreshed = nullptr) {
  GptConfig cfg;
  cfg.n_layer = 2;
  cfg.n_head = 2;
  cfg.d_model = 16;
  cfg.seq_len = 8;
  cfg.vocab_size = 23;
  cfg.vocab_multiple = 8;
  Generator init(5), dropout(1);
  Gpt model(cfg, init, device);
  AdamW adam(model.parameters().all(), AdamWOptions{0.1, 0.9, 0.95, 1e-8});
  const Tensor ids = Tensor::from_vector<int64_t>({1, 5, 22, 0, 7, 7, 3, 9}, {2, 4}).to(device);
  const Tensor targets = Tensor::from_vector<int64_t>({5, 22, 0, 7, 7, 3, 9, 2}, {8}).to(device);
  const Tensor before = model.forward(ids, DType::bf16, true, dropout).tensor().clone();
  ops::CrossEntropyOptions xo;
  xo.num_classes = cfg.vocab_size;
  ops::cross_entropy(model.forward(ids, DType::bf16, true, dropout), targets, xo).loss.backward();
  adam.step(1e-2);
  if (refreshed) {
    *refreshed = true;
    for (Parameter& p : model.parameters().all()) {
      const ComputeCopy& c = p.var.impl()->compute_copy;
      *refreshed = *refreshed && c.copy.defined() && c.version == p.var.tensor().storage()->version();
    }
  }
  model.parameters().zero_grad();
  const Tensor after = model.forward(ids, DType::bf16, true, dropout).tensor().to(Device::cpu());

  Generator init2(99);
  Gpt fresh(cfg, init2, device);
  for (size_t i = 0; i < model.parameters().all().size(); ++i)
    fresh.parameters().all()[i].var.tensor().copy_(model.parameters().all()[i].var.tensor());
  const Tensor want = fresh.forward(ids, DType::bf16, true, dropout).tensor().to(Device::cpu());
  EXPECT_TRUE(test::close_rel(after, want, 0)) << "the forward after the step used stale weights";
  EXPECT_FALSE(test::close_rel(after, before.to(Device::cpu()), 1e-3))
      << "the step changed nothing: the test proves nothing";
}

TEST(Cast, GptForwardAfterAnAdamWStepSeesTheNewWeights) { check_forward_after_step(Device::cpu()); }

TEST(Cast, CudaAdamWRewritesTheCachedBf16CopiesExactly) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  bool refreshed = false;
  check_forward_after_step(Device::cuda(0), &refreshed);
  EXPECT_TRUE(refreshed) << "AdamW did not rewrite the cached bf16 copies (the forward re-cast instead)";
}

}  // namespace
}  // namespace zt
