#include "models/gpt.h"

#include <cmath>
#include <cstdio>

#include "framework/distributed/process_group.h"
#include "ops/cast.h"
#include "ops/attention.h"
#include "ops/dropout.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/layernorm.h"
#include "ops/matmul.h"
#include "ops/mlp.h"
#include "ops/shape_ops.h"
#include "ops/tensor_parallel.h"

namespace zt {

namespace {
constexpr double kInitStd = 0.02;
}

void GptConfig::validate() const {
  ZT_CHECK(n_layer >= 1, "GPT: n_layer must be >= 1, got ", n_layer);
  ZT_CHECK(n_head >= 1, "GPT: n_head must be >= 1, got ", n_head);
  ZT_CHECK(d_model >= 1 && d_model % n_head == 0, "GPT: n_head ", n_head, " does not divide d_model ", d_model);
  ZT_CHECK(seq_len >= 1, "GPT: seq_len must be >= 1, got ", seq_len);
  ZT_CHECK(vocab_size >= 2, "GPT: vocab_size must be >= 2, got ", vocab_size);
  ZT_CHECK(vocab_multiple >= 1, "GPT: vocab_multiple must be >= 1, got ", vocab_multiple);
  ZT_CHECK(dropout >= 0 && dropout < 1, "GPT: dropout must be in [0, 1), got ", dropout);
}

void GptConfig::validate_tensor_parallel(int64_t T) const {
  ZT_CHECK(T >= 1, "tensor_parallel_size must be >= 1, got ", T);
  if (T == 1) return;
  ZT_CHECK(n_head % T == 0, "tensor_parallel_size ", T, " does not divide model.n_head ", n_head,
           " (each rank takes whole heads)");
  ZT_CHECK((4 * d_model) % T == 0, "tensor_parallel_size ", T, " does not divide the MLP width 4 * d_model = ",
           4 * d_model);
  ZT_CHECK(padded_vocab() % T == 0, "tensor_parallel_size ", T, " does not divide the padded vocabulary ",
           padded_vocab(), " (vocab_size ", vocab_size, " padded to a multiple of vocab_multiple ", vocab_multiple,
           "; choose a vocab_multiple divisible by ", T, ")");
  ZT_CHECK(dropout == 0, "model.dropout ", dropout, " with tensor_parallel_size ", T,
           " is not supported (the ranks would need one dropout stream); set model.dropout: 0");
}

int64_t GptConfig::num_parameters() const {
  const int64_t C = d_model;
  const int64_t per_block = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C);
  return padded_vocab() * C + seq_len * C + n_layer * per_block + 2 * C;
}

Gpt::Gpt(const GptConfig& config, Generator& init, Device device, std::shared_ptr<ProcessGroup> tp_group)
    : config_(config), device_(device), tp_(std::move(tp_group)) {
  config_.validate();
  const int T = tp_size(), r = tp_rank();
  config_.validate_tensor_parallel(T);
  const int64_t C = config_.d_model, V = config_.vocab_size, Vp = config_.padded_vocab();
  const double proj_std = kInitStd / std::sqrt(2.0 * static_cast<double>(config_.n_layer));

  auto normal = [&](const Shape& s, double std) { return Tensor::randn(s, DType::f32, init, 0.0, std, device_); };
  auto zeros = [&](const Shape& s) { return Tensor::zeros(s, DType::f32, device_); };
  auto ones = [&](const Shape& s) { return Tensor::full(s, 1.0, DType::f32, device_); };

  // Whole tensors drawn in one order whatever T is, then this rank's shard kept.
  auto add = [&](const std::string& name, const Tensor& full, bool decay, ShardSpec spec = {}) {
    return params_.add(name, shard_of(full, spec, r, T), decay, spec);
  };
  const ShardSpec rows{0, 1}, qkv_rows{0, 3}, columns{1, 1};

  // Padded rows stay zero: no token id selects them and the LM head never reads them.
  Tensor wte = zeros({Vp, C});
  wte.slice(0, 0, V).copy_(normal({V, C}, kInitStd));
  wte_ = add("wte.weight", wte, true, rows);
  wpe_ = add("wpe.weight", normal({config_.seq_len, C}, kInitStd), true);
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    Block b;
    b.ln_1_w = add(p + "ln_1.weight", ones({C}), false);
    b.ln_1_b = add(p + "ln_1.bias", zeros({C}), false);
    b.attn_w = add(p + "attn.c_attn.weight", normal({3 * C, C}, kInitStd), true, qkv_rows);
    b.attn_b = add(p + "attn.c_attn.bias", zeros({3 * C}), false, qkv_rows);
    b.attn_proj_w = add(p + "attn.c_proj.weight", normal({C, C}, proj_std), true, columns);
    b.attn_proj_b = add(p + "attn.c_proj.bias", zeros({C}), false);
    b.ln_2_w = add(p + "ln_2.weight", ones({C}), false);
    b.ln_2_b = add(p + "ln_2.bias", zeros({C}), false);
    b.fc_w = add(p + "mlp.c_fc.weight", normal({4 * C, C}, kInitStd), true, rows);
    b.fc_b = add(p + "mlp.c_fc.bias", zeros({4 * C}), false, rows);
    b.fc_proj_w = add(p + "mlp.c_proj.weight", normal({C, 4 * C}, proj_std), true, columns);
    b.fc_proj_b = add(p + "mlp.c_proj.bias", zeros({C}), false);
    blocks_.push_back(std::move(b));
  }
  ln_f_w_ = add("ln_f.weight", ones({C}), false);
  ln_f_b_ = add("ln_f.bias", zeros({C}), false);
  std::vector<int64_t> pos(static_cast<size_t>(config_.seq_len));
  for (size_t t = 0; t < pos.size(); ++t) pos[t] = static_cast<int64_t>(t);
  positions_ = Tensor::from_vector(pos, {config_.seq_len}, device_);
}

int Gpt::tp_size() const { return tp_ ? tp_->size() : 1; }
int Gpt::tp_rank() const { return tp_ ? tp_->rank() : 0; }

Variable Gpt::row_parallel_out(const Variable& partial, const Variable& bias, DType compute) const {
  return ops::add(ops::reduce_from_tensor_parallel(partial, tp_), ops::cast(bias, compute));
}

Variable Gpt::block_forward(const Block& b, const Variable& x, DType compute, bool training, Generator& gen) const {
  const int64_t H = config_.n_head / tp_size();  // this rank's heads
  const double p = config_.dropout;
  auto c = [&](const Variable& w) { return ops::cast(w, compute); };
  const bool tp = tp_size() > 1;
  // One rank without dropout: each residual add rides on the output product that makes its
  // branch (cuBLASLt reads the residual stream as its C input: no separate add kernel, one
  // rounding). Dropout would come between product and add, and with T ranks the product is
  // partial (the bias and the add follow the all-reduce): those keep the separate add.
  const bool fold_residual = !tp && (p == 0 || !training);

  Variable h = ops::copy_to_tensor_parallel(ops::layernorm(x, c(b.ln_1_w), c(b.ln_1_b)), tp_);
  Variable y = ops::causal_self_attention(ops::linear(h, c(b.attn_w), c(b.attn_b)), H);  // [B, T, C/T]
  // One rank: the bias rides on the product (and the residual, when it folds). T ranks: each
  // product is partial, the bias is added once to their sum.
  Variable r;
  if (fold_residual) {
    r = ops::linear(y, c(b.attn_proj_w), c(b.attn_proj_b), x);
  } else {
    y = tp ? row_parallel_out(ops::linear(y, c(b.attn_proj_w)), b.attn_proj_b, compute)
           : ops::linear(y, c(b.attn_proj_w), c(b.attn_proj_b));
    r = ops::add(x, ops::dropout(y, p, gen, training));
  }

  h = ops::copy_to_tensor_parallel(ops::layernorm(r, c(b.ln_2_w), c(b.ln_2_b)), tp_);
  if (fold_residual) return ops::mlp(h, c(b.fc_w), c(b.fc_b), c(b.fc_proj_w), c(b.fc_proj_b), r);
  h = tp ? row_parallel_out(ops::mlp(h, c(b.fc_w), c(b.fc_b), c(b.fc_proj_w), Variable()), b.fc_proj_b, compute)
         : ops::mlp(h, c(b.fc_w), c(b.fc_b), c(b.fc_proj_w), c(b.fc_proj_b));
  return ops::add(r, ops::dropout(h, p, gen, training));
}

Variable Gpt::forward(const Tensor& ids, DType compute, bool training, Generator& dropout_gen) const {
  ZT_CHECK(ids.dim() == 2, "GPT forward: token ids must be [batch, time], got shape ", shape_str(ids.shape()));
  ZT_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, "GPT forward: token ids must be i32 or i64, got ",
           dtype_name(ids.dtype()));
  ZT_CHECK(is_floating(compute), "GPT forward: compute dtype must be f32, bf16 or f64, got ",
           dtype_name(compute));
  ZT_CHECK(ids.device() == device_, "GPT forward: token ids on ", ids.device().str(), ", model on ", device_.str());
  const int64_t B = ids.size(0), T = ids.size(1), C = config_.d_model;
  ZT_CHECK(B >= 1 && T >= 1 && T <= config_.seq_len, "GPT forward: ", T, " tokens per sequence, the model's seq_len is ",
           config_.seq_len);

  const Tensor positions = positions_.slice(0, 0, T);

  // The tied table (this rank's rows), cast once. The lookup checks ids against the real
  // vocabulary, so an id in the padding is rejected like any other out-of-range id; ids of
  // other ranks' rows give zero rows here and the all-reduce sums the shards' lookups.
  const Variable wte = ops::cast(wte_, compute);
  const int64_t first_row = tp_rank() * wte_.shape()[0];
  Variable tokens = ops::reduce_from_tensor_parallel(
      ops::embedding_shard(wte, Variable(ids), first_row, config_.vocab_size), tp_);
  Variable x = ops::add(tokens, ops::embedding(ops::cast(wpe_, compute), Variable(positions)));
  x = ops::dropout(x, config_.dropout, dropout_gen, training);
  for (const Block& b : blocks_) x = block_forward(b, x, compute, training, dropout_gen);
  x = ops::layernorm(x, ops::cast(ln_f_w_, compute), ops::cast(ln_f_b_, compute));
  // The head multiplies by the whole padded table (this rank's rows of it): rows of
  // padded_vocab() elements keep the logits' leading dimension aligned (cuBLASLt's fast
  // kernels). The loss leaves the padded columns out (num_classes = vocab_size) and gives
  // them exactly zero gradient, so the padded rows of wte get none from the head either (nor
  // from the lookup).
  return ops::linear(ops::copy_to_tensor_parallel(ops::reshape(x, {B * T, C}), tp_), wte);
}

double Gpt::flops_per_token() const {
  // The convention the project's anchors use (issue 7; llm.c-style MFU): 6 FLOPs per
  // parameter per token (2 forward, 4 backward) plus 6 L d T for attention's scores and
  // values at full context. One formula for the trainer's mfu field and bench_step.
  const double n = static_cast<double>(num_parameters());
  const double L = static_cast<double>(config_.n_layer), T = static_cast<double>(config_.seq_len),
               C = static_cast<double>(config_.d_model);
  return 6.0 * n + 6.0 * L * C * T;
}

std::string format_parameter_count(int64_t n) {
  std::string digits = std::to_string(n), grouped;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
    grouped += digits[i];
  }
  char m[32];
  std::snprintf(m, sizeof m, "%.2fM", static_cast<double>(n) / 1e6);
  return grouped + " (" + m + ")";
}

}  // namespace zt
