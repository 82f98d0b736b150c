// train.activation_checkpointing on the CPU, both families: block and mlp regions give the
// losses and every parameter gradient of none bit for bit (f32 and bf16 compute, with dropout,
// and without it, where the residual adds ride on the products), and the graph holds one region
// per block. Evaluation (no grad) runs the blocks as they are.
#include <gtest/gtest.h>

#include "framework/autograd/grad_mode.h"
#include "tests/models/activation_checkpointing_util.h"

namespace zt {
namespace {

ModelConfig tiny_gpt(double dropout) {
  ModelConfig c;
  c.n_layer = 3;
  c.n_head = 2;
  c.d_model = 16;
  c.seq_len = 8;
  c.vocab_size = 37;
  c.vocab_multiple = 8;
  c.dropout = dropout;
  return c;
}

ModelConfig tiny_llama(double dropout) {
  ModelConfig c = tiny_gpt(dropout);
  c.n_head = 4;
  return test::as_llama(c);
}

// The llama family's other choices: LayerNorm with biases, the GELU MLP (ops::mlp), learned
// positions, a tied head.
ModelConfig tiny_llama_gelu(double dropout) {
  ModelConfig c = tiny_llama(dropout);
  c.norm = "layernorm";
  c.mlp = "gelu";
  c.position = "learned";
  c.qk_norm = false;
  c.tie_embeddings = true;
  c.bias = true;
  return c;
}

TEST(ActivationCheckpointing, GptSameBitsWithDropout) {
  test::expect_modes_agree(tiny_gpt(0.1), "gpt2 dropout 0.1", Device::cpu());
}
TEST(ActivationCheckpointing, GptSameBitsWithFoldedResiduals) {
  test::expect_modes_agree(tiny_gpt(0.0), "gpt2", Device::cpu());
}
TEST(ActivationCheckpointing, LlamaSameBitsWithDropout) {
  test::expect_modes_agree(tiny_llama(0.1), "llama dropout 0.1", Device::cpu());
}
TEST(ActivationCheckpointing, LlamaSameBitsWithFoldedResiduals) {
  test::expect_modes_agree(tiny_llama(0.0), "llama", Device::cpu());
}
TEST(ActivationCheckpointing, LlamaGeluLayerNormTiedSameBits) {
  test::expect_modes_agree(tiny_llama_gelu(0.1), "llama gelu dropout 0.1", Device::cpu());
  test::expect_modes_agree(tiny_llama_gelu(0.0), "llama gelu", Device::cpu());
}

TEST(ActivationCheckpointing, EvaluationRunsTheBlocksAsTheyAre) {
  for (const ModelConfig& base : {tiny_gpt(0.1), tiny_llama(0.1)}) {
    std::vector<Tensor> logits;
    for (const char* mode : {"none", "block"}) {
      ModelConfig c = base;
      c.activation_checkpointing = mode;
      Generator init(1), gen(2);
      const auto model = make_model(c, init);
      NoGradGuard no_grad;
      const Variable out = model->forward(Tensor::from_vector(std::vector<int32_t>{1, 2, 3, 4}, {1, 4}), DType::f32,
                                          /*training=*/false, gen);
      EXPECT_FALSE(out.requires_grad());
      logits.push_back(out.tensor());
    }
    EXPECT_TRUE(test::same_bits(logits[1], logits[0])) << base.arch;
  }
}

TEST(ActivationCheckpointing, UnknownModeIsRefusedNamingTheKey) {
  ModelConfig c = tiny_gpt(0);
  c.activation_checkpointing = "all";
  EXPECT_EQ(test::error_of([&] { c.validate(); }),
            "train.activation_checkpointing must be none, block or mlp, got 'all'");
}

}  // namespace
}  // namespace zt
