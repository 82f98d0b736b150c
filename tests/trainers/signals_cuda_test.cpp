// The instability signals on CUDA against the CPU (which tests/trainers/signals_test.cpp holds
// to direct f64 computations): the moments kernel on a strided bf16 / f32 matrix with causal
// blocks and a NaN, and every signal of one training step of both families (f32 and bf16),
// head unfused and fused. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "framework/device.h"
#include "framework/random.h"
#include "ops/moments.h"
#include "trainers/adamw.h"
#include "trainers/config.h"
#include "trainers/training_step.h"

namespace zt {
namespace {

TEST(MomentsCuda, MatchTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  Generator g(5);
  const Tensor wide = Tensor::randn({300, 530}, DType::f32, g, 0.1, 3.0);
  for (DType dt : {DType::f32, DType::bf16})
    for (int64_t period : {0, 100}) {
      const Tensor x = wide.to(dt).slice(1, 7, 507);  // [300, 500], rows strided
      ops::Moments cpu(Device::cpu()), gpu(Device::cuda(0));
      ops::accumulate_moments(x, 450, period, cpu);
      ops::accumulate_moments(x.to(Device::cuda(0)), 450, period, gpu);
      const auto cs = cpu.sums.to_vector<double>(), gs = gpu.sums.to_vector<double>();
      const auto cm = cpu.maxes.to_vector<double>(), gm = gpu.maxes.to_vector<double>();
      EXPECT_NEAR(gs[0], cs[0], 1e-9 * cs[1]) << period;
      EXPECT_NEAR(gs[1], cs[1], 1e-12 * cs[1]) << period;
      EXPECT_EQ(gs[2], cs[2]) << period;
      EXPECT_EQ(gm[0], cm[0]) << period;
      EXPECT_EQ(gm[1], cm[1]) << period;
    }
  Tensor nan = Tensor::zeros({4, 4}, DType::f32);
  nan.data<float>()[6] = NAN;
  ops::Moments gpu(Device::cuda(0));
  ops::accumulate_moments(nan.to(Device::cuda(0)), 4, 0, gpu);
  EXPECT_EQ(gpu.sums.to_vector<double>()[3], 1.0);
  EXPECT_TRUE(std::isnan(gpu.maxes.to_vector<double>()[1]));
}

std::map<std::string, double> step_signals(const std::string& model_yaml, bool fused, const std::string& device,
                                           DType compute) {
  const Config cfg = parse_config(
      "model: " + model_yaml + "\nloss: {z_loss_weight: 1.0e-3}\n" +
          "optim: {lr: 1.0e-2, min_lr: 1.0e-3, weight_decay: 0.1, grad_clip: 1.0}\n"
          "train: {batch_size: 2, grad_accum: 2, max_steps: 4, seed: 3}\n"
          "data: {train: unused.bin, val: unused.bin}\n",
      "signals_cuda_test.yaml");
  const Device dev = device == "cpu" ? Device::cpu() : Device::cuda(0);
  Generator init(cfg.train.seed);
  auto model = make_model(cfg.model, init, dev);
  AdamW adam(model->parameters().all(), AdamWOptions{0.1, 0.9, 0.95, 1e-8});
  const ParallelContext par = single_rank_context(dev);
  TrainingStep step(cfg, *model, adam, par, compute, fused);
  const int64_t T = cfg.model.seq_len, V = cfg.model.vocab_size;
  int a = 0;
  const StepMetrics m = step.run(
      [&] {
        std::vector<int64_t> in, tg;
        for (int64_t i = 0; i < 2 * T; ++i) {
          in.push_back((i * 7919 + 13 * a) % V);
          tg.push_back((i * 104729 + 7 * a) % V);
        }
        ++a;
        return data::Batch{Tensor::from_vector(in, {2, T}), Tensor::from_vector(tg, {2, T})};
      },
      1e-2, 1e-3, false, nullptr, /*signals=*/true);
  return {m.signals.begin(), m.signals.end()};
}

void expect_agree(const std::string& model_yaml, bool fused, DType compute, double rel) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  const auto want = step_signals(model_yaml, fused, "cpu", compute);
  const auto got = step_signals(model_yaml, fused, "cuda", compute);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [key, v] : want) {
    const double slack = key == "logits_mean" ? rel * want.at("logits_std") : rel * std::fabs(v) + 1e-9;
    EXPECT_NEAR(got.at(key), v, slack) << key << " " << dtype_name(compute) << (fused ? " fused" : "");
  }
}

// Head dim 64 (cuDNN's attention takes it), padded vocabulary, two layers.
const char* kGpt = "{n_layer: 2, n_head: 4, d_model: 256, seq_len: 64, vocab_size: 1000, vocab_multiple: 64}";
const char* kLlama =
    "{arch: llama, n_layer: 2, n_head: 4, n_kv_head: 2, qk_norm: true, d_model: 256, seq_len: 64, "
    "vocab_size: 1000, vocab_multiple: 64}";

TEST(SignalsCuda, GptMatchesTheCpuInF32) {
  expect_agree(kGpt, false, DType::f32, 1e-4);
  expect_agree(kGpt, true, DType::f32, 1e-4);
}
TEST(SignalsCuda, LlamaMatchesTheCpuInF32) {
  expect_agree(kLlama, false, DType::f32, 1e-4);
  expect_agree(kLlama, true, DType::f32, 1e-4);
}
// bf16: the logits and the scores from bf16 activations; the update of bf16-rounded gradients.
TEST(SignalsCuda, BothFamiliesMatchTheCpuInBf16) {
  expect_agree(kGpt, false, DType::bf16, 3e-2);
  expect_agree(kLlama, true, DType::bf16, 3e-2);
}

}  // namespace
}  // namespace zt
