// The up-front memory estimate: exact parameter bytes, a lower bound for the rest, and a
// refusal that names the sizes and the keys to shrink.
#include "trainers/memory_estimate.h"
#include "trainers/training_step.h"

#include <gtest/gtest.h>

namespace zt {
namespace {

TEST(MemoryEstimate, Gpt2SmallParameterAndOptimizerBytes) {
  const ModelConfig gpt2;  // the defaults: GPT-2 124M, vocab padded to 50304
  const MemoryEstimate e = estimate_training_memory(gpt2, 16, DType::f32);
  const double n = static_cast<double>(gpt2.num_parameters());
  EXPECT_EQ(n, 124475904.0);
  EXPECT_EQ(e.parameters, 4 * n);
  EXPECT_EQ(e.gradients, 4 * n);
  EXPECT_EQ(e.optimizer, 8 * n);
  EXPECT_GT(e.activations, 16.0 * 1024 * 50304 * 4);  // at least the logits
  EXPECT_EQ(estimate_training_memory(gpt2, 16, DType::bf16).parameters, 6 * n);  // + the bf16 copy
  EXPECT_EQ(estimate_inference_memory(gpt2, 1).optimizer, 0);
}

// train.activation_checkpointing: mlp drops the MLP's hidden values of every block; block keeps
// each block's input plus one block's activations (live while it is recomputed), and its
// logits and gradients are never alive together.
TEST(MemoryEstimate, ActivationCheckpointingKeepsLess) {
  ModelConfig m;  // GPT-2 small: C 768, MLP 3072 (pre- and post-GELU kept)
  const double tokens = 16.0 * 1024, L = 12, C = 768, per_block = m.activation_values_per_token_and_layer();
  const double logits = tokens * 4 * static_cast<double>(m.padded_vocab());
  EXPECT_EQ(estimate_training_memory(m, 16, DType::f32).activations, tokens * 4 * L * per_block + logits);
  m.activation_checkpointing = "mlp";
  EXPECT_EQ(estimate_training_memory(m, 16, DType::f32).activations,
            tokens * 4 * L * (per_block - 2 * 3072) + logits);
  m.activation_checkpointing = "block";
  // Recomputed blocks: the logits count only by what they exceed the gradients by.
  const MemoryEstimate block = estimate_training_memory(m, 16, DType::f32);
  EXPECT_EQ(block.activations, tokens * 4 * (L * C + per_block) + std::max(0.0, logits - block.gradients));
  EXPECT_LT(block.activations, tokens * 4 * (L * C + per_block) + logits);
  EXPECT_EQ(estimate_training_memory(m, 16, DType::f32).parameters, estimate_training_memory(ModelConfig{}, 16, DType::f32).parameters);
}

TEST(MemoryEstimate, ShortfallNamesSizesAndKeys) {
  ModelConfig huge;
  huge.n_layer = 1024;
  huge.d_model = 65536;
  huge.n_head = 1;
  const MemoryEstimate e = estimate_training_memory(huge, 8, DType::f32);
  EXPECT_GT(e.total(), 5e14);  // no overflow at the validator's limits
  const std::string msg = memory_shortfall(e, 64e9, Device::cpu(), "training this config", training_memory_remedies(Config{}));
  EXPECT_NE(msg.find("training this config needs at least"), std::string::npos) << msg;
  EXPECT_NE(msg.find("64.00 GB of host memory"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.n_layer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.activation_checkpointing: block"), std::string::npos) << msg;
  EXPECT_EQ(memory_shortfall(estimate_training_memory(ModelConfig{}, 1, DType::f32), 1e12, Device::cpu(), "x"), "");
  EXPECT_EQ(memory_shortfall(e, 0, Device::cpu(), "x"), "");  // unknown: no refusal
}

TEST(MemoryEstimate, HostMemoryIsKnownOnLinux) { EXPECT_GT(available_memory(Device::cpu()), 1e6); }

// GPU: cudaMemGetInfo's free bytes, and a config larger than the card is refused naming it.
TEST(MemoryEstimate, DeviceMemoryIsKnownOnAGpu) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  const double free_b = available_memory(Device::cuda(0));
  EXPECT_GT(free_b, 1e8);
  EXPECT_LT(free_b, 1e12);
  ModelConfig huge;
  huge.n_layer = 1024;
  huge.d_model = 8192;
  huge.n_head = 64;
  const std::string msg = memory_shortfall(estimate_training_memory(huge, 8, DType::bf16), free_b, Device::cuda(0), "x");
  EXPECT_NE(msg.find("of cuda:0 memory is free"), std::string::npos) << msg;
}


// Under ZeRO over D data-parallel ranks a rank holds 1/D of the optimizer state (stage 1; with
// bf16 compute of the f32 master weights too) and of the gradients (stage 2); tensor
// parallelism divides everything by T first.
TEST(MemoryEstimate, ZeroDividesTheOptimizerAndGradientsPerRank) {
  Config c;
  c.model.n_layer = 2;
  c.model.d_model = 64;
  c.model.n_head = 4;
  c.model.seq_len = 32;
  c.model.vocab_size = 500;
  c.train.batch_size = 8;
  ParallelLayout l;
  l.world_size = 8;
  l.tp_size = 2;
  l.dp_size = 4;
  const MemoryEstimate z0 = rank_training_memory(c, l, DType::bf16, false);
  c.parallel.zero_stage = 1;
  const MemoryEstimate z1 = rank_training_memory(c, l, DType::bf16, false);
  c.parallel.zero_stage = 2;
  const MemoryEstimate z2 = rank_training_memory(c, l, DType::bf16, false);
  EXPECT_DOUBLE_EQ(z1.optimizer, z0.optimizer / 4);
  EXPECT_DOUBLE_EQ(z1.gradients, z0.gradients);
  EXPECT_DOUBLE_EQ(z2.optimizer, z0.optimizer / 4);
  EXPECT_DOUBLE_EQ(z2.gradients, z0.gradients / 4);
  EXPECT_DOUBLE_EQ(z2.activations, z0.activations);
  EXPECT_DOUBLE_EQ(z0.optimizer * 2, estimate_training_memory(c.model, 2, DType::bf16).optimizer);
  // bf16: the f32 masters are sharded with the optimizer state (4/D bytes per parameter), the
  // bf16 weights (2) stay whole; all of it 1/T under tensor parallelism.
  const double n = static_cast<double>(c.model.num_parameters()) / 2;
  EXPECT_DOUBLE_EQ(z0.parameters, (4 + 2) * n);
  EXPECT_DOUBLE_EQ(z1.parameters, (4.0 / 4 + 2) * n);
  EXPECT_DOUBLE_EQ(z2.parameters, z1.parameters);
  // f32: the masters are the weights, whole at every stage.
  for (int stage : {0, 1, 2}) {
    c.parallel.zero_stage = stage;
    EXPECT_DOUBLE_EQ(rank_training_memory(c, l, DType::f32, false).parameters, 4 * n) << stage;
  }
}

// The remedies name only what is not already in use: a config that recomputes blocks under
// ZeRO-2 is not told to; generate's refusal names the model alone.
TEST(MemoryEstimate, RemediesNameWhatTheConfigDoesNotUseYet) {
  Config c;
  std::string r = training_memory_remedies(c);
  EXPECT_NE(r.find("train.activation_checkpointing: block"), std::string::npos) << r;
  EXPECT_NE(r.find("parallel.zero_stage 1 or 2"), std::string::npos) << r;
  c.model.activation_checkpointing = "block";
  c.parallel.zero_stage = 1;
  r = training_memory_remedies(c);
  EXPECT_EQ(r.find("activation_checkpointing"), std::string::npos) << r;
  EXPECT_NE(r.find("parallel.zero_stage 2 shards"), std::string::npos) << r;
  c.parallel.zero_stage = 2;
  r = training_memory_remedies(c);
  EXPECT_EQ(r.find("zero_stage"), std::string::npos) << r;
  EXPECT_NE(r.find("parallel.tensor_parallel_size"), std::string::npos) << r;
  ModelConfig huge;
  huge.n_layer = 1024;
  huge.d_model = 65536;
  huge.n_head = 1;
  const std::string gen = memory_shortfall(estimate_inference_memory(huge, 1), 1e9, Device::cpu(), "generate");
  EXPECT_NE(gen.find("model.n_layer"), std::string::npos) << gen;
  EXPECT_EQ(gen.find("train."), std::string::npos) << gen;
}

}  // namespace
}  // namespace zt
