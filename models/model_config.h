#pragma once
// The model section of a config: which family (model.arch) and its shape. Every family reads
// the same struct; the family keys are orthogonal choices so each can be ablated on its own:
//
//   arch      gpt2 | llama       gpt2 fixes the choices below to GPT-2's (and rejects others);
//                                llama takes any combination of them
//   norm      layernorm | rmsnorm                     (llama default rmsnorm)
//   mlp       gelu | swiglu, width d_ff               (llama default swiglu, d_ff 8/3 d_model)
//   position  learned | rope, rope_theta              (llama default rope, theta 500000)
//   qk_norm   RMSNorm of q and k per head             (default off)
//   n_kv_head grouped-query attention                 (0: n_head, multi-head attention)
//   tie_embeddings, bias                              (llama defaults false, false)
//
// config validation (trainers/config.cpp) fills the llama defaults of the keys a config does not
// set, so a resolved config always states every choice.
#include <cstdint>
#include <string>

namespace zt {

struct ModelConfig {
  std::string arch = "gpt2";  // gpt2 | llama
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t d_model = 768;
  int64_t seq_len = 1024;
  int64_t vocab_size = 50257;
  int64_t vocab_multiple = 128;
  double dropout = 0.0;
  // The family's choices (GPT-2's values by default).
  std::string norm = "layernorm";   // layernorm | rmsnorm
  std::string mlp = "gelu";         // gelu | swiglu
  int64_t d_ff = 0;                 // MLP hidden width; 0: 4 d_model (gelu), 8/3 d_model rounded up to 64 (swiglu)
  std::string position = "learned";  // learned | rope
  double rope_theta = 500000.0;     // RoPE base (Llama 3 / OLMo 2)
  bool qk_norm = false;             // RMSNorm over the head dim of q and k, per head, before RoPE
  int64_t n_kv_head = 0;            // key/value heads; 0: n_head; must divide n_head
  bool tie_embeddings = true;       // the LM head is the token embedding table
  bool bias = true;                 // biases in the linear layers (and LayerNorm)
  double norm_eps = 1e-5;           // epsilon of every norm (LayerNorm, RMSNorm, QK-norm)
  // How the forward trades compute for memory (framework/autograd/checkpoint.h), the config's
  // train.activation_checkpointing: none; block (each block a checkpoint region: backward keeps
  // only the blocks' inputs and recomputes one block at a time); mlp (the second half of each
  // block, norm + MLP + residual, a region: the MLP's hidden values are recomputed). Same bits
  // either way; not a shape key (a resume may change it).
  std::string activation_checkpointing = "none";  // none | block | mlp

  int64_t padded_vocab() const { return (vocab_size + vocab_multiple - 1) / vocab_multiple * vocab_multiple; }
  int64_t head_dim() const { return d_model / n_head; }
  int64_t kv_heads() const { return n_kv_head == 0 ? n_head : n_kv_head; }
  int64_t ffn_width() const;  // d_ff, or the default of the mlp kind
  // Rows of the fused attention input projection: q heads, then k and v heads.
  int64_t qkv_width() const { return (n_head + 2 * kv_heads()) * head_dim(); }
  bool is_gpt2() const { return arch == "gpt2"; }

  void validate() const;  // zt::Error naming the field and its value
  // T-way tensor parallelism needs T to divide n_head, the kv heads, the MLP width and the padded
  // vocabulary, and no dropout; zt::Error naming the values otherwise.
  void validate_tensor_parallel(int64_t T) const;
  // Trainable elements, padded embedding rows included (llm.c counts the same way):
  // 124,475,904 for GPT-2 small with vocab 50257 padded to 50304.
  int64_t num_parameters() const;
  // FLOPs of one token's forward + backward, 6 N + 6 L d T (N without the position table): the
  // numerator of MFU, one formula for the trainer's mfu field and bench_step.
  double flops_per_token() const;
  // Values per token and block that backward keeps at least without checkpointing.
  double activation_values_per_token_and_layer() const;
  // Values per token that backward keeps at least over all blocks, as activation_checkpointing
  // says (memory estimate): none, n_layer blocks' worth; mlp, without the MLP's hidden values;
  // block, each block's input plus one block's worth, live while it is recomputed.
  double activation_values_per_token() const;
};

}  // namespace zt
