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

Gpt::Gpt(const ModelConfig& config, Generator& init, Device device, std::shared_ptr<ProcessGroup> tp_group)
    : Model(config, device, std::move(tp_group)), branch_out_(tp_, config_.dropout) {
  ZT_CHECK(config_.is_gpt2(), "the GPT-2 model needs model.arch: gpt2, got '", config_.arch, "'");
  const int T = tp_size(), r = tp_rank();
  const int64_t C = config_.d_model, V = config_.vocab_size, Vp = config_.padded_vocab();
  const double proj_std = kInitStd / std::sqrt(2.0 * static_cast<double>(config_.n_layer));

  auto normal = [&](const Shape& s, double std) { return Tensor::randn(s, DType::f32, init, 0.0, std, device_); };
  auto zeros = [&](const Shape& s) { return Tensor::zeros(s, DType::f32, device_); };
  auto ones = [&](const Shape& s) { return Tensor::full(s, 1.0, DType::f32, device_); };

  // Whole tensors drawn in one order whatever T is, then this rank's shard kept.
  auto add = [&](const std::string& name, const Tensor& full, bool decay, ParamGroup group, ShardSpec spec = {}) {
    return params_.add(name, shard_of(full, spec, r, T), decay, group, spec);
  };
  using G = ParamGroup;
  const ShardSpec rows{0, 1}, qkv_rows{0, 3}, columns{1, 1};

  // Padded rows stay zero: no token id selects them and the LM head never reads them.
  Tensor wte = zeros({Vp, C});
  wte.slice(0, 0, V).copy_(normal({V, C}, kInitStd));
  wte_ = add("wte.weight", wte, true, G::embedding, rows);
  wpe_ = add("wpe.weight", normal({config_.seq_len, C}, kInitStd), true, G::embedding);
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    Block b;
    b.ln_1_w = add(p + "ln_1.weight", ones({C}), false, G::norm);
    b.ln_1_b = add(p + "ln_1.bias", zeros({C}), false, G::norm);
    b.attn_w = add(p + "attn.c_attn.weight", normal({3 * C, C}, kInitStd), true, G::attention, qkv_rows);
    b.attn_b = add(p + "attn.c_attn.bias", zeros({3 * C}), false, G::attention, qkv_rows);
    b.attn_proj_w = add(p + "attn.c_proj.weight", normal({C, C}, proj_std), true, G::attention, columns);
    b.attn_proj_b = add(p + "attn.c_proj.bias", zeros({C}), false, G::attention);
    b.ln_2_w = add(p + "ln_2.weight", ones({C}), false, G::norm);
    b.ln_2_b = add(p + "ln_2.bias", zeros({C}), false, G::norm);
    b.fc_w = add(p + "mlp.c_fc.weight", normal({4 * C, C}, kInitStd), true, G::mlp, rows);
    b.fc_b = add(p + "mlp.c_fc.bias", zeros({4 * C}), false, G::mlp, rows);
    b.fc_proj_w = add(p + "mlp.c_proj.weight", normal({C, 4 * C}, proj_std), true, G::mlp, columns);
    b.fc_proj_b = add(p + "mlp.c_proj.bias", zeros({C}), false, G::mlp);
    blocks_.push_back(std::move(b));
  }
  ln_f_w_ = add("ln_f.weight", ones({C}), false, G::norm);
  ln_f_b_ = add("ln_f.bias", zeros({C}), false, G::norm);
  std::vector<int64_t> pos(static_cast<size_t>(config_.seq_len));
  for (size_t t = 0; t < pos.size(); ++t) pos[t] = static_cast<int64_t>(t);
  positions_ = Tensor::from_vector(pos, {config_.seq_len}, device_);
}

Variable Gpt::attention_half(int64_t layer, const Block& b, const Variable& x, DType compute, bool training,
                             Generator& gen) const {
  const int64_t H = config_.n_head / tp_size();  // this rank's heads
  auto c = [&](const Variable& w) { return ops::cast(w, compute); };
  Variable h = ops::copy_to_tensor_parallel(ops::layernorm(x, c(b.ln_1_w), c(b.ln_1_b)), tp_);
  const Variable qkv = ops::linear(h, c(b.attn_w), c(b.attn_b));
  observe_attention(layer, qkv, H, H);
  const Variable y = ops::causal_self_attention(qkv, H);  // [B, T, C/T]
  const Variable w = c(b.attn_proj_w);
  return branch_out_([&](const Variable& bias, const Variable& res) { return ops::linear(y, w, bias, res); },
                     c(b.attn_proj_b), x, training, gen);
}

Variable Gpt::mlp_half(const Block& b, const Variable& r, DType compute, bool training, Generator& gen) const {
  auto c = [&](const Variable& w) { return ops::cast(w, compute); };
  const Variable h = ops::copy_to_tensor_parallel(ops::layernorm(r, c(b.ln_2_w), c(b.ln_2_b)), tp_);
  const Variable w_fc = c(b.fc_w), b_fc = c(b.fc_b), w_proj = c(b.fc_proj_w);
  return branch_out_(
      [&](const Variable& bias, const Variable& res) { return ops::mlp(h, w_fc, b_fc, w_proj, bias, res); },
      c(b.fc_proj_b), r, training, gen);
}

Model::HeadInputs Gpt::head_inputs(const Tensor& ids, DType compute, bool training, Generator& dropout_gen) const {
  const auto [B, T] = check_ids(ids, compute);
  const int64_t C = config_.d_model;
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
  auto half = [this, compute, training, &gen = dropout_gen](int64_t l, BlockHalf which, const Variable& v) {
    const Block& b = blocks_[static_cast<size_t>(l)];
    return which == BlockHalf::attention ? attention_half(l, b, v, compute, training, gen)
                                         : mlp_half(b, v, compute, training, gen);
  };
  x = blocks(half, x, dropout_gen);
  x = ops::layernorm(x, ops::cast(ln_f_w_, compute), ops::cast(ln_f_b_, compute));
  return {ops::reshape(x, {B * T, C}), wte};
}

}  // namespace zt
