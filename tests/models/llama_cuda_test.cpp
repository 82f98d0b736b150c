// The llama family on CUDA against the same model on the CPU (which tests/models/llama_test.cpp
// holds to the independent NumPy reference): loss and every parameter gradient, f32 and bf16,
// with head dims cuDNN takes (64) and GQA, so the CUDA kernels of RMSNorm, SwiGLU, QK-norm +
// RoPE and grouped-query attention run inside a real model.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "models/llama.h"
#include "tests/support/check.h"

namespace zt {
namespace {

ModelConfig cuda_config() {
  ModelConfig c;
  c.arch = "llama";
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_model = 256;  // head dim 64
  c.seq_len = 64;
  c.vocab_size = 1000;
  c.vocab_multiple = 64;
  c.norm = "rmsnorm";
  c.mlp = "swiglu";
  c.position = "rope";
  c.qk_norm = true;
  c.tie_embeddings = false;
  c.bias = false;
  return c;
}

struct Result {
  double loss = 0;
  std::map<std::string, Tensor> grads;
};

Result loss_and_grads(Llama& model, const Tensor& ids, const Tensor& targets, DType compute) {
  LossOptions o;
  o.loss.z_loss_weight = 1e-3;
  o.loss.label_smoothing = 0.1;
  Generator no_dropout(0);
  const ops::CrossEntropyResult r =
      model.loss(ids.to(model.device()), targets.to(model.device()), o, compute, true, no_dropout);
  Result out;
  out.loss = r.loss.tensor().to(Device::cpu()).item();
  r.loss.backward();
  for (const auto& p : model.parameters().all()) out.grads[p.name] = p.var.grad().to(Device::cpu()).to(DType::f32);
  return out;
}

void expect_agree(const ModelConfig& c, DType compute, double tol_loss, double tol_grads) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  Generator g_cpu(99), g_gpu(99);
  Llama cpu(c, g_cpu, Device::cpu()), gpu(c, g_gpu, Device::cuda(0));
  std::vector<int32_t> ids, targets;
  for (int64_t i = 0; i < 2 * c.seq_len; ++i) {
    ids.push_back(static_cast<int32_t>((i * 7919 + 13) % c.vocab_size));
    targets.push_back(static_cast<int32_t>((i * 104729 + 7) % c.vocab_size));
  }
  const Tensor id_t = Tensor::from_vector(ids, {2, c.seq_len}), tg_t = Tensor::from_vector(targets, {2 * c.seq_len});
  const Result want = loss_and_grads(cpu, id_t, tg_t, compute), got = loss_and_grads(gpu, id_t, tg_t, compute);
  EXPECT_NEAR(got.loss, want.loss, tol_loss * std::abs(want.loss)) << dtype_name(compute);
  for (const auto& [name, g] : want.grads)
    EXPECT_TRUE(test::close_rel(got.grads.at(name), g, tol_grads)) << "gradient of " << name << " " << dtype_name(compute);
}

TEST(LlamaCuda, LossAndGradientsMatchTheCpuInF32) { expect_agree(cuda_config(), DType::f32, 1e-5, 1e-3); }
TEST(LlamaCuda, LossAndGradientsMatchTheCpuInBf16) { expect_agree(cuda_config(), DType::bf16, 2e-2, 5e-2); }

// Every other choice through CUDA too: LayerNorm with biases, GELU, learned positions, MQA, tied.
TEST(LlamaCuda, OtherChoicesMatchTheCpu) {
  ModelConfig c = cuda_config();
  c.norm = "layernorm";
  c.mlp = "gelu";
  c.position = "learned";
  c.qk_norm = false;
  c.n_kv_head = 1;
  c.tie_embeddings = true;
  c.bias = true;
  expect_agree(c, DType::f32, 1e-5, 1e-3);
  expect_agree(c, DType::bf16, 2e-2, 5e-2);
}

}  // namespace
}  // namespace zt
