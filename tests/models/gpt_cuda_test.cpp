// The GPT model on the GPU against the same model on the CPU: same seed, same init (drawn on
// the host), same batch; logits, the cross-entropy loss (z-loss and label smoothing on) and
// every parameter's gradient must agree (f32: 1e-5 on logits and loss, 1e-4 on gradients,
// which sum many more terms; bf16 compute with f32 master weights: 2e-2), and three AdamW
// steps with gradient clipping (device kernels: multi-tensor AdamW, global norm) must move
// the two models the same way. Skips without a GPU.
#include <gtest/gtest.h>

#include "framework/device.h"
#include "models/gpt.h"
#include "ops/cross_entropy.h"
#include "ops/matmul.h"
#include "tests/support/check.h"
#include "trainers/adamw.h"
#include "trainers/grad_clip.h"

namespace zt {
namespace {

GptConfig small_config() {
  GptConfig c;
  c.n_layer = 2;
  c.n_head = 4;
  c.d_model = 64;
  c.seq_len = 48;
  c.vocab_size = 101;
  c.vocab_multiple = 16;  // padded to 112
  return c;
}

struct Batch {
  Tensor ids, targets;
};

Batch random_batch(const GptConfig& c, int64_t B, int64_t T) {
  auto draw = [&](int64_t n) {
    std::vector<double> u = Tensor::rand({n}, DType::f64, test::test_generator(), 0, c.vocab_size).to_vector<double>();
    std::vector<int64_t> v(u.size());
    for (size_t i = 0; i < u.size(); ++i) v[i] = std::min<int64_t>(c.vocab_size - 1, static_cast<int64_t>(u[i]));
    return v;
  };
  std::vector<int64_t> targets = draw(B * T);
  for (size_t i = 0; i < targets.size(); i += 7) targets[i] = -100;  // some ignored rows
  return {Tensor::from_vector(draw(B * T), {B, T}).to(DType::i32), Tensor::from_vector(targets, {B * T})};
}

struct StepResult {
  Tensor logits;  // f64, host (before the loss overwrites them with the gradient)
  double loss = 0;
  std::map<std::string, Tensor> grads;  // f64, host
};

StepResult forward_backward(Gpt& model, const Batch& b, DType compute) {
  Generator dropout(1);
  model.parameters().zero_grad();
  Variable logits = model.forward(b.ids.to(model.device()), compute, true, dropout);
  StepResult r;
  r.logits = logits.tensor().to(Device::cpu()).to(DType::f64);
  EXPECT_EQ(logits.shape(), (Shape{b.ids.numel(), model.config().padded_vocab()}));
  ops::CrossEntropyOptions o;
  o.z_loss_weight = 1e-3;
  o.label_smoothing = 0.1;
  o.num_classes = model.config().vocab_size;  // the head's columns past it are padding
  ops::CrossEntropyResult x = ops::cross_entropy(logits, b.targets.to(model.device()), o);
  x.check();
  r.loss = x.loss.tensor().item();
  x.loss.backward();
  for (const Parameter& p : model.parameters().all()) {
    EXPECT_TRUE(p.var.has_grad()) << p.name;
    if (p.var.has_grad()) r.grads[p.name] = p.var.grad().to(Device::cpu()).to(DType::f64);
  }
  // The padded rows of the tied table: exactly zero gradient on either device.
  const GptConfig& c = model.config();
  for (double g : r.grads.at("wte.weight").slice(0, c.vocab_size, c.padded_vocab()).to_vector<double>())
    EXPECT_EQ(g, 0.0) << "padded row of wte.weight on " << model.device().str();
  return r;
}

void expect_models_agree(DType compute, double tol_logits, double tol_grads) {
  const GptConfig c = small_config();
  Generator g_cpu(1234), g_gpu(1234);
  Gpt cpu(c, g_cpu, Device::cpu()), gpu(c, g_gpu, Device::cuda(0));
  const Batch b = random_batch(c, 3, c.seq_len);
  const StepResult want = forward_backward(cpu, b, compute);
  const StepResult got = forward_backward(gpu, b, compute);
  EXPECT_TRUE(test::close_rel(got.logits, want.logits, tol_logits)) << "logits " << dtype_name(compute);
  EXPECT_NEAR(got.loss, want.loss, tol_logits * std::abs(want.loss)) << dtype_name(compute);
  for (const auto& [name, g] : want.grads) {
    auto it = got.grads.find(name);
    ASSERT_NE(it, got.grads.end()) << name;
    EXPECT_TRUE(test::close_rel(it->second, g, tol_grads)) << "gradient of " << name << " " << dtype_name(compute);
  }
}

TEST(GptCuda, LossAndGradientsMatchTheCpuInF32) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  expect_models_agree(DType::f32, 1e-5, 1e-4);
}

TEST(GptCuda, LossAndGradientsMatchTheCpuInBf16) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  expect_models_agree(DType::bf16, 2e-2, 2e-2);
}

// One rank without dropout: both residual adds of every block ride on the output products
// (the attention projection and the MLP's fc_proj read the residual stream as cuBLASLt's C),
// so no separate add runs for them; the tests above check the numbers against the CPU.
TEST(GptCuda, ResidualAddsRideOnTheOutputProducts) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  const GptConfig c = small_config();
  Generator init(5);
  Gpt gpu(c, init, Device::cuda(0));
  const Batch b = random_batch(c, 2, c.seq_len);
  for (DType t : {DType::f32, DType::bf16})
    for (bool training : {true, false}) {
      Generator dropout(1);
      const int64_t before = ops::residual_gemm_count();
      (void)gpu.forward(b.ids.to(gpu.device()), t, training, dropout);
      EXPECT_EQ(ops::residual_gemm_count() - before, 2 * c.n_layer) << dtype_name(t) << " training " << training;
    }
}

TEST(GptCuda, AdamWStepsMatchTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  const GptConfig c = small_config();
  Generator g_cpu(99), g_gpu(99);
  Gpt cpu(c, g_cpu, Device::cpu()), gpu(c, g_gpu, Device::cuda(0));
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt_cpu(cpu.parameters().all(), o), opt_gpu(gpu.parameters().all(), o);
  for (int step = 0; step < 3; ++step) {
    const Batch b = random_batch(c, 2, c.seq_len);
    const StepResult want = forward_backward(cpu, b, DType::f32);
    const StepResult got = forward_backward(gpu, b, DType::f32);
    EXPECT_NEAR(got.loss, want.loss, 1e-5 * std::abs(want.loss)) << "step " << step;
    const double n_cpu = global_grad_norm(cpu.parameters().all());
    const double n_gpu = global_grad_norm(gpu.parameters().all());
    EXPECT_NEAR(n_gpu, n_cpu, 1e-4 * n_cpu) << "grad norm, step " << step;
    // A threshold below the norm, so the clip really scales the gradients.
    clip_grad_norm(cpu.parameters().all(), 0.5 * n_cpu, n_cpu);
    clip_grad_norm(gpu.parameters().all(), 0.5 * n_cpu, n_gpu);
    opt_cpu.step(1e-3);
    opt_gpu.step(1e-3);
  }
  for (const Parameter& p : cpu.parameters().all()) {
    const Tensor& w = gpu.parameters().get(p.name).var.tensor();
    EXPECT_EQ(w.device(), Device::cuda(0));
    EXPECT_TRUE(test::close_rel(w, p.var.tensor(), 1e-3)) << p.name;
  }
}

}  // namespace
}  // namespace zt
