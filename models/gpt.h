#pragma once
// GPT-2 (Radford et al. 2019), as in llm.c / nanoGPT:
//
//   x = wte[ids] + wpe[0..T)                      token + learned position embeddings
//   repeat n_layer times (pre-LayerNorm blocks):
//     x = x + c_proj(attn(c_attn(ln_1(x))))        causal self-attention, fused qkv projection
//     x = x + c_proj(gelu_tanh(c_fc(ln_2(x))))     MLP of 4x width
//   logits = ln_f(x) @ wte^T                       LM head tied to the token embedding
//
// The embedding table has padded_vocab() rows (a multiple of vocab_multiple: 50257 ->
// 50304). The LM head multiplies by the whole padded table, so logits have padded_vocab()
// columns (an aligned leading dimension: the fast GEMM kernels): columns >= vocab_size are
// padding. Pass num_classes = vocab_size to ops::cross_entropy, which then never reads them
// and gives them a zero gradient, and sample from the first vocab_size columns only
// (models/sampling.h). The padded rows stay zero and get exactly zero gradient.
//
// Initialisation (GPT-2): every weight N(0, 0.02), the two residual projections of each
// block N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorm gains 1. Parameters are f32; a
// bf16 forward casts them at use (the gradient flows back to the f32 master copy).
//
// Tensor parallelism over a group of T ranks (Megatron-LM's scheme; docs/parallelism.md):
//   wte            vocab-parallel: rank r holds rows [r Vp/T, (r+1) Vp/T); the lookup gives
//                  zero rows for other shards' ids, then an all-reduce (reduce_from)
//   wpe, ln_*      replicated
//   c_attn         column-parallel: the q, k and v rows of heads [r H/T, (r+1) H/T); no comm
//   attn.c_proj    row-parallel: columns [r C/T, ...); all-reduce of the output, then + bias
//   mlp.c_fc       column-parallel: rows [r 4C/T, ...); no comm
//   mlp.c_proj     row-parallel: columns [r 4C/T, ...); all-reduce, then + bias
//   LM head        the tied wte shard: logits [B*T, Vp/T], this rank's vocabulary columns,
//                  which go straight into the vocab-parallel cross-entropy (never gathered)
// Every column-parallel input passes copy_to (identity forward, all-reduce of its gradient).
// Parameters are initialised as on one rank (same seed, whole tensors) and then cut, so any
// T starts from the same model. Dropout is not supported with T > 1.
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "models/row_parallel_residual.h"

namespace zt {

class ProcessGroup;

// GPT-2 reads the shared model section; tests and tools that build one directly may say so.
using GptConfig = ModelConfig;

class Gpt final : public Model {
 public:
  // Initialises every parameter from `init` (seeded: same seed, same model) on `device`.
  // `tp_group` (null or one rank: the whole model) splits it for tensor parallelism.
  // config.arch must be gpt2.
  Gpt(const ModelConfig& config, Generator& init, Device device = Device::cpu(),
      std::shared_ptr<ProcessGroup> tp_group = nullptr);

  // The head is the tied wte (this rank's rows), cast once for the lookup and the head.
  HeadInputs head_inputs(const Tensor& ids, DType compute, bool training, Generator& dropout_gen) const override;
  std::string describe() const override { return "GPT-2"; }

 private:
  struct Block {
    Variable ln_1_w, ln_1_b, attn_w, attn_b, attn_proj_w, attn_proj_b;
    Variable ln_2_w, ln_2_b, fc_w, fc_b, fc_proj_w, fc_proj_b;
  };
  // A block's two halves (Model::blocks): x -> x + attn(ln_1(x)), r -> r + mlp(ln_2(r)).
  // `layer` (0-based) names the block to the attention score probe.
  Variable attention_half(int64_t layer, const Block& b, const Variable& x, DType compute, bool training,
                          Generator& gen) const;
  Variable mlp_half(const Block& b, const Variable& r, DType compute, bool training, Generator& gen) const;

  RowParallelResidual branch_out_;  // attn.c_proj and mlp.c_proj into the residual stream

  Variable wte_, wpe_, ln_f_w_, ln_f_b_;
  std::vector<Block> blocks_;
  Tensor positions_;  // 0 .. seq_len - 1 on the model's device: no upload per forward
};

}  // namespace zt
