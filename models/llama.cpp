#include "models/llama.h"

#include <cmath>
#include <functional>
#include <sstream>

#include "framework/error.h"
#include "ops/attention.h"
#include "ops/cast.h"
#include "ops/dropout.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/layernorm.h"
#include "ops/matmul.h"
#include "ops/mlp.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/shape_ops.h"
#include "ops/swiglu.h"
#include "ops/tensor_parallel.h"

namespace zt {

namespace {
constexpr double kInitStd = 0.02;
}

Llama::Llama(const ModelConfig& config, Generator& init, Device device, std::shared_ptr<ProcessGroup> tp_group)
    : Model(config, device, std::move(tp_group)), branch_out_(tp_, config_.dropout) {
  ZT_CHECK(config_.arch == "llama", "the llama model needs model.arch: llama, got '", config_.arch, "'");
  const int T = tp_size(), r = tp_rank();
  const ModelConfig& m = config_;
  const int64_t C = m.d_model, V = m.vocab_size, Vp = m.padded_vocab(), D = m.head_dim(), F = m.ffn_width();
  const int64_t H = m.n_head, Hkv = m.kv_heads();
  const double proj_std = kInitStd / std::sqrt(2.0 * static_cast<double>(m.n_layer));

  auto normal = [&](const Shape& s, double std) { return Tensor::randn(s, DType::f32, init, 0.0, std, device_); };
  auto zeros = [&](const Shape& s) { return Tensor::zeros(s, DType::f32, device_); };
  // Whole tensors drawn in one order whatever T is, then this rank's shard kept.
  auto add = [&](const std::string& name, const Tensor& full, bool decay, ParamGroup group, ShardSpec spec = {}) {
    return params_.add(name, shard_of(full, spec, r, T), decay, group, spec);
  };
  auto add_bias = [&](const std::string& name, int64_t n, ParamGroup group, ShardSpec spec = {}) {
    return m.bias ? add(name, zeros({n}), false, group, spec) : Variable();
  };
  using G = ParamGroup;
  auto vocab_table = [&] {  // padded rows stay zero: no id selects them, the loss never reads them
    Tensor t = zeros({Vp, C});
    t.slice(0, 0, V).copy_(normal({V, C}, kInitStd));
    return t;
  };
  const ShardSpec rows{0, 1}, two_blocks{0, 2}, columns{1, 1};

  tok_embeddings_ = add("tok_embeddings.weight", vocab_table(), true, G::embedding, rows);
  if (m.position == "learned")
    pos_embeddings_ = add("pos_embeddings.weight", normal({m.seq_len, C}, kInitStd), true, G::embedding);
  for (int64_t l = 0; l < m.n_layer; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    Block b;
    b.attn_norm = add_norm(p + "attn_norm");
    b.wq = add(p + "attn.wq.weight", normal({H * D, C}, kInitStd), true, G::attention, rows);
    b.bq = add_bias(p + "attn.wq.bias", H * D, G::attention, rows);
    b.wkv = add(p + "attn.wkv.weight", normal({2 * Hkv * D, C}, kInitStd), true, G::attention, two_blocks);
    b.bkv = add_bias(p + "attn.wkv.bias", 2 * Hkv * D, G::attention, two_blocks);
    if (m.qk_norm) {
      b.q_norm = add(p + "attn.q_norm.weight", Tensor::full({D}, 1.0, DType::f32, device_), false, G::norm);
      b.k_norm = add(p + "attn.k_norm.weight", Tensor::full({D}, 1.0, DType::f32, device_), false, G::norm);
    }
    b.wo = add(p + "attn.wo.weight", normal({C, H * D}, proj_std), true, G::attention, columns);
    b.bo = add_bias(p + "attn.wo.bias", C, G::attention);
    b.mlp_norm = add_norm(p + "mlp_norm");
    if (m.mlp == "swiglu") {
      b.w_in = add(p + "mlp.w_gate_up.weight", normal({2 * F, C}, kInitStd), true, G::mlp, two_blocks);
      b.b_in = add_bias(p + "mlp.w_gate_up.bias", 2 * F, G::mlp, two_blocks);
    } else {
      b.w_in = add(p + "mlp.w_fc.weight", normal({F, C}, kInitStd), true, G::mlp, rows);
      b.b_in = add_bias(p + "mlp.w_fc.bias", F, G::mlp, rows);
    }
    b.w_down = add(p + "mlp.w_down.weight", normal({C, F}, proj_std), true, G::mlp, columns);
    b.b_down = add_bias(p + "mlp.w_down.bias", C, G::mlp);
    blocks_.push_back(std::move(b));
  }
  norm_f_ = add_norm("norm_f");
  if (!m.tie_embeddings) lm_head_ = add("lm_head.weight", vocab_table(), true, G::head, rows);
  std::vector<int64_t> pos(static_cast<size_t>(m.seq_len));
  for (size_t t = 0; t < pos.size(); ++t) pos[t] = static_cast<int64_t>(t);
  positions_ = Tensor::from_vector(pos, {m.seq_len}, device_);
}

Llama::Norm Llama::add_norm(const std::string& name) {
  Norm n;
  n.weight = params_.add(name + ".weight", Tensor::full({config_.d_model}, 1.0, DType::f32, device_), false,
                           ParamGroup::norm);
  if (config_.norm == "layernorm" && config_.bias)
    n.bias = params_.add(name + ".bias", Tensor::zeros({config_.d_model}, DType::f32, device_), false,
                             ParamGroup::norm);
  return n;
}

Variable Llama::norm(const Norm& n, const Variable& x, DType compute) const {
  const Variable g = ops::cast(n.weight, compute);
  if (config_.norm == "rmsnorm") return ops::rmsnorm(x, g, config_.norm_eps);
  const Variable beta = n.bias.defined() ? ops::cast(n.bias, compute)
                                         : Variable(Tensor::zeros({config_.d_model}, compute, device_));
  return ops::layernorm(x, g, beta, config_.norm_eps);
}

Variable Llama::attention_half(int64_t layer, const Block& b, const Variable& x, DType compute, bool training,
                               Generator& gen) const {
  const ModelConfig& m = config_;
  const int64_t H = m.n_head / tp_size(), Hkv = m.kv_heads() / tp_size();  // this rank's heads
  auto c = [&](const Variable& v) { return v.defined() ? ops::cast(v, compute) : Variable(); };
  // The gains of QK-norm act on this rank's heads only: their gradient is summed over the group.
  auto shared = [&](const Variable& v) { return ops::copy_to_tensor_parallel(c(v), tp_); };

  // One product for q, k and v (this rank's heads: [H D | Hkv D | Hkv D] rows).
  Variable h = ops::copy_to_tensor_parallel(norm(b.attn_norm, x, compute), tp_);
  const Variable w_qkv = ops::concat_rows({c(b.wq), c(b.wkv)});
  const Variable b_qkv = m.bias ? ops::concat_rows({c(b.bq), c(b.bkv)}) : Variable();
  Variable qkv = ops::linear(h, w_qkv, b_qkv);  // [B, T, (H + 2 Hkv) D]
  if (m.qk_norm || m.position == "rope")
    qkv = ops::qk_norm_rope(qkv, H, Hkv, m.position == "rope" ? m.rope_theta : 0.0,
                            m.qk_norm ? shared(b.q_norm) : Variable(), m.qk_norm ? shared(b.k_norm) : Variable(),
                            m.norm_eps);
  observe_attention(layer, qkv, H, Hkv);
  const Variable y = ops::causal_self_attention(qkv, H, Hkv);  // [B, T, H D]
  const Variable wo = c(b.wo);
  return branch_out_([&](const Variable& bias, const Variable& res) { return ops::linear(y, wo, bias, res); },
                     c(b.bo), x, training, gen);
}

Variable Llama::mlp_half(const Block& b, const Variable& r, DType compute, bool training, Generator& gen) const {
  const ModelConfig& m = config_;
  auto c = [&](const Variable& v) { return v.defined() ? ops::cast(v, compute) : Variable(); };
  const Variable h = ops::copy_to_tensor_parallel(norm(b.mlp_norm, r, compute), tp_);
  const Variable w_in = c(b.w_in), b_in = c(b.b_in), w_down = c(b.w_down);
  if (m.mlp == "swiglu") {
    const Variable gated = ops::swiglu(ops::linear(h, w_in, b_in));
    return branch_out_([&](const Variable& bias, const Variable& res) { return ops::linear(gated, w_down, bias, res); },
                       c(b.b_down), r, training, gen);
  }
  // GELU: ops::mlp keeps the activation on the products' epilogues.
  return branch_out_(
      [&](const Variable& bias, const Variable& res) { return ops::mlp(h, w_in, b_in, w_down, bias, res); },
      c(b.b_down), r, training, gen);
}

Model::HeadInputs Llama::head_inputs(const Tensor& ids, DType compute, bool training, Generator& dropout_gen) const {
  const auto [B, T] = check_ids(ids, compute);
  // The table (this rank's rows), cast once: the lookup and, when tied, the head.
  const Variable table = ops::cast(tok_embeddings_, compute);
  const int64_t first_row = tp_rank() * tok_embeddings_.shape()[0];
  Variable x = ops::reduce_from_tensor_parallel(
      ops::embedding_shard(table, Variable(ids), first_row, config_.vocab_size), tp_);
  if (pos_embeddings_.defined())
    x = ops::add(x, ops::embedding(ops::cast(pos_embeddings_, compute), Variable(positions_.slice(0, 0, T))));
  x = ops::dropout(x, config_.dropout, dropout_gen, training);
  auto half = [this, compute, training, &gen = dropout_gen](int64_t l, BlockHalf which, const Variable& v) {
    const Block& b = blocks_[static_cast<size_t>(l)];
    return which == BlockHalf::attention ? attention_half(l, b, v, compute, training, gen)
                                         : mlp_half(b, v, compute, training, gen);
  };
  x = blocks(half, x, dropout_gen);
  x = norm(norm_f_, x, compute);
  const Variable head = config_.tie_embeddings ? table : ops::cast(lm_head_, compute);
  return {ops::reshape(x, {B * T, config_.d_model}), head};
}

std::string Llama::describe() const {
  const ModelConfig& m = config_;
  std::ostringstream s;
  s << "llama (" << m.norm << ", " << m.mlp << " d_ff " << m.ffn_width() << ", " << m.position;
  if (m.position == "rope") s << " theta " << m.rope_theta;
  if (m.qk_norm) s << ", qk_norm";
  s << ", " << m.n_head << " q / " << m.kv_heads() << " kv heads, " << (m.tie_embeddings ? "tied" : "untied")
    << (m.bias ? ", bias" : ", no bias") << ")";
  return s.str();
}

}  // namespace zt
