#include "models/model_config.h"

#include "framework/error.h"

namespace zt {

int64_t ModelConfig::ffn_width() const {
  if (d_ff > 0) return d_ff;
  if (mlp == "swiglu") return (8 * d_model / 3 + 63) / 64 * 64;  // 768 -> 2048, as Llama's multiple_of rounding
  return 4 * d_model;
}

void ModelConfig::validate() const {
  ZT_CHECK(arch == "gpt2" || arch == "llama", "model.arch must be gpt2 or llama, got '", arch, "'");
  ZT_CHECK(n_layer >= 1, "model.n_layer must be >= 1, got ", n_layer);
  ZT_CHECK(n_head >= 1, "model.n_head must be >= 1, got ", n_head);
  ZT_CHECK(d_model >= 1 && d_model % n_head == 0, "model.n_head ", n_head, " does not divide model.d_model ", d_model);
  ZT_CHECK(seq_len >= 1, "model.seq_len must be >= 1, got ", seq_len);
  ZT_CHECK(vocab_size >= 2, "model.vocab_size must be >= 2, got ", vocab_size);
  ZT_CHECK(vocab_multiple >= 1, "model.vocab_multiple must be >= 1, got ", vocab_multiple);
  ZT_CHECK(dropout >= 0 && dropout < 1, "model.dropout must be in [0, 1), got ", dropout);
  ZT_CHECK(norm == "layernorm" || norm == "rmsnorm", "model.norm must be layernorm or rmsnorm, got '", norm, "'");
  ZT_CHECK(mlp == "gelu" || mlp == "swiglu", "model.mlp must be gelu or swiglu, got '", mlp, "'");
  ZT_CHECK(position == "learned" || position == "rope", "model.position must be learned or rope, got '", position,
           "'");
  ZT_CHECK(d_ff >= 0, "model.d_ff must be >= 0 (0: the mlp's default width), got ", d_ff);
  ZT_CHECK(rope_theta > 0, "model.rope_theta must be > 0, got ", rope_theta);
  ZT_CHECK(norm_eps > 0, "model.norm_eps must be > 0, got ", norm_eps);
  ZT_CHECK(activation_checkpointing == "none" || activation_checkpointing == "block" ||
               activation_checkpointing == "mlp",
           "train.activation_checkpointing must be none, block or mlp, got '", activation_checkpointing, "'");
  ZT_CHECK(n_kv_head >= 0 && n_head % kv_heads() == 0, "model.n_kv_head ", n_kv_head, " does not divide model.n_head ",
           n_head, " (each key/value head serves n_head / n_kv_head query heads; 0 means n_head)");
  ZT_CHECK(position != "rope" || head_dim() % 2 == 0, "model.position: rope needs an even head dimension, but d_model ",
           d_model, " / n_head ", n_head, " = ", head_dim());
  if (is_gpt2()) {
    // GPT-2 is one fixed point of the choices; anything else is the llama family's.
    auto fixed = [&](bool ok, const char* key, const std::string& value, const char* gpt2_value) {
      ZT_CHECK(ok, "model.", key, ": ", value, " needs model.arch: llama (model.arch: gpt2 has ", key, " ", gpt2_value,
               ")");
    };
    fixed(norm == "layernorm", "norm", norm, "layernorm");
    fixed(mlp == "gelu", "mlp", mlp, "gelu");
    fixed(d_ff == 0 || d_ff == 4 * d_model, "d_ff", std::to_string(d_ff), "4 * d_model");
    fixed(position == "learned", "position", position, "learned");
    fixed(!qk_norm, "qk_norm", "true", "false");
    fixed(kv_heads() == n_head, "n_kv_head", std::to_string(n_kv_head), "n_head");
    fixed(tie_embeddings, "tie_embeddings", "false", "true");
    fixed(bias, "bias", "false", "true");
    fixed(norm_eps == 1e-5, "norm_eps", std::to_string(norm_eps), "1e-5");
  }
}

void ModelConfig::validate_tensor_parallel(int64_t T) const {
  ZT_CHECK(T >= 1, "tensor_parallel_size must be >= 1, got ", T);
  if (T == 1) return;
  ZT_CHECK(n_head % T == 0, "tensor_parallel_size ", T, " does not divide model.n_head ", n_head,
           " (each rank takes whole heads)");
  ZT_CHECK(kv_heads() % T == 0, "tensor_parallel_size ", T, " does not divide the ", kv_heads(),
           " key/value heads (model.n_kv_head; each rank takes whole heads)");
  ZT_CHECK(ffn_width() % T == 0, "tensor_parallel_size ", T, " does not divide the MLP width ", ffn_width(),
           mlp == "gelu" && d_ff == 0 ? " (4 * d_model)" : "");
  ZT_CHECK(padded_vocab() % T == 0, "tensor_parallel_size ", T, " does not divide the padded vocabulary ",
           padded_vocab(), " (vocab_size ", vocab_size, " padded to a multiple of vocab_multiple ", vocab_multiple,
           "; choose a vocab_multiple divisible by ", T, ")");
  ZT_CHECK(dropout == 0, "model.dropout ", dropout, " with tensor_parallel_size ", T,
           " is not supported (the ranks would need one dropout stream); set model.dropout: 0");
}

int64_t ModelConfig::num_parameters() const {
  const int64_t C = d_model, F = ffn_width(), D = head_dim(), Q = qkv_width();
  const int64_t b = bias ? 1 : 0;
  const int64_t norm_params = norm == "layernorm" && bias ? 2 * C : C;
  const int64_t attn = Q * C + b * Q + C * C + b * C + (qk_norm ? 2 * D : 0);
  const int64_t ffn = mlp == "swiglu" ? 2 * F * C + b * 2 * F + C * F + b * C : F * C + b * F + C * F + b * C;
  const int64_t per_block = 2 * norm_params + attn + ffn;
  const int64_t embeddings = padded_vocab() * C * (tie_embeddings ? 1 : 2) + (position == "learned" ? seq_len * C : 0);
  return embeddings + n_layer * per_block + norm_params;
}

double ModelConfig::flops_per_token() const {
  // The convention the project's anchors use (llm.c-style MFU): 6 FLOPs per parameter per token
  // (2 forward, 4 backward) plus 6 L d T for attention's scores and values at full context.
  const double n = static_cast<double>(num_parameters());
  return 6.0 * n + 6.0 * static_cast<double>(n_layer) * static_cast<double>(d_model) * static_cast<double>(seq_len);
}

namespace {
// The MLP's hidden values: pre- and post-activation for GELU; gate|up and the product for SwiGLU.
double mlp_hidden_values(const ModelConfig& m) {
  return (m.mlp == "swiglu" ? 3.0 : 2.0) * static_cast<double>(m.ffn_width());
}
}  // namespace

double ModelConfig::activation_values_per_token_and_layer() const {
  // At least: the two norms' outputs, the qkv projection, the attention output and the MLP's
  // hidden values.
  const double C = static_cast<double>(d_model);
  const double Q = static_cast<double>(qkv_width());
  const double rotated = position == "rope" || qk_norm ? Q : 0;  // the rotated / normalised copy
  return 2 * C + Q + rotated + C + mlp_hidden_values(*this);
}

double ModelConfig::activation_values_per_token() const {
  const double L = static_cast<double>(n_layer), block = activation_values_per_token_and_layer();
  // mlp: the region keeps its input (the residual stream, C values) in place of the second
  // norm's output (C values), and drops the hidden values.
  if (activation_checkpointing == "mlp") return L * (block - mlp_hidden_values(*this));
  if (activation_checkpointing == "block") return L * static_cast<double>(d_model) + block;
  return L * block;
}

}  // namespace zt
