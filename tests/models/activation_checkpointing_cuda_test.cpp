// train.activation_checkpointing on CUDA, both families: block and mlp regions give the losses
// and every parameter gradient of none bit for bit, in f32 and bf16, with head dims the fused
// attention takes (64), GQA and the residual adds riding on the cuBLASLt products (so the
// no-grad forward and the recomputation must pick the same kernels as a forward with a graph),
// after checking that two runs of none agree bit for bit at all. Skips without a GPU. (No
// dropout: it has no CUDA kernel.)
#include <gtest/gtest.h>

#include "framework/device.h"
#include "tests/models/activation_checkpointing_util.h"

namespace zt {
namespace {

ModelConfig gpt_config() {
  ModelConfig c;
  c.n_layer = 2;
  c.n_head = 4;
  c.d_model = 256;  // head dim 64
  c.seq_len = 64;
  c.vocab_size = 1000;
  c.vocab_multiple = 64;
  return c;
}

void expect_modes_agree_on_cuda(const ModelConfig& c, const std::string& what) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  // Bits can only agree where the step itself repeats them: a kernel that sums with atomics in
  // a free order (a fused attention's dQ) would differ between two runs of none already, and
  // this says so instead of blaming the regions.
  for (DType compute : {DType::f32, DType::bf16})
    test::expect_same_bits(test::train_grads(c, "none", compute, Device::cuda(0)),
                           test::train_grads(c, "none", compute, Device::cuda(0)),
                           what + " " + dtype_name(compute) + ": none run twice (is the CUDA step deterministic?)");
  test::expect_modes_agree(c, what, Device::cuda(0));
}

TEST(ActivationCheckpointingCuda, GptSameBits) { expect_modes_agree_on_cuda(gpt_config(), "gpt2"); }
TEST(ActivationCheckpointingCuda, LlamaSameBits) { expect_modes_agree_on_cuda(test::as_llama(gpt_config()), "llama"); }

}  // namespace
}  // namespace zt
