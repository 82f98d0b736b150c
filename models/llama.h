#pragma once
// The llama family (Llama 3, OLMo 2, Qwen 3 style), built from orthogonal choices so each can
// be ablated alone (models/model_config.h):
//
//   x = tok_embeddings[ids] (+ pos_embeddings[0..T) when position: learned)
//   repeat n_layer times (pre-norm blocks):
//     h = x + wo(attn(rope(qk_norm(split(norm_1(x) @ [wq; wkv]^T)))))      causal, GQA
//     x = h + mlp(norm_2(h))      swiglu: w_down(silu(h W_gate) * (h W_up)); gelu: GPT-2's
//   logits = norm_f(x) @ W_head^T     W_head: lm_head.weight, or tok_embeddings when tied
//
//   norm     rmsnorm(x) = x / sqrt(mean(x^2) + eps) * g, or LayerNorm (+ bias when model.bias)
//   qk_norm  RMSNorm over the head dim of each q and k head (gains [D] shared by the heads)
//   rope     pairs (i, i + D/2) of each q and k head rotated by pos * theta^(-2i/D)
//   gqa      n_kv_head key/value heads; query head h reads kv head h / (n_head / n_kv_head)
//
// Parameters (checkpoint names) and their tensor-parallel splits (Megatron's scheme; the heads
// and kv heads split whole, so QK-norm and RoPE stay local to a rank):
//   tok_embeddings.weight [Vp, C]          vocab-parallel rows (lookup + all-reduce, as GPT-2's wte)
//   pos_embeddings.weight [T, C]           replicated (position: learned only)
//   layers.L.attn_norm.{weight,bias}       replicated (bias: layernorm with model.bias)
//   layers.L.attn.wq.weight [H D, C]       column-parallel: heads [r H/T, (r+1) H/T)
//   layers.L.attn.wkv.weight [2 Hkv D, C]  column-parallel, k and v blocks cut separately
//   layers.L.attn.{q,k}_norm.weight [D]    replicated; their gradient is summed over the group
//                                          (each rank normalises only its own heads)
//   layers.L.attn.wo.weight [C, H D]       row-parallel: all-reduce of the output, then + bias
//   layers.L.mlp_norm.{weight,bias}        replicated
//   layers.L.mlp.w_gate_up.weight [2F, C]  column-parallel, gate and up blocks cut separately
//     (gelu: layers.L.mlp.w_fc.weight [F, C])
//   layers.L.mlp.w_down.weight [C, F]      row-parallel
//   norm_f.{weight,bias}, lm_head.weight [Vp, C] (untied: vocab-parallel, straight into the loss)
// Biases (model.bias) sit beside each weight with the weight's row split (wq, wkv, w_gate_up)
// or replicated after the all-reduce (wo, w_down).
//
// Initialisation: matrices and embeddings N(0, 0.02), the two residual projections (wo, w_down)
// N(0, 0.02 / sqrt(2 n_layer)), biases 0, norm gains 1; whole tensors drawn in one order on
// every rank, then cut, so any T starts from the same model.
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "models/row_parallel_residual.h"

namespace zt {

class Llama final : public Model {
 public:
  Llama(const ModelConfig& config, Generator& init, Device device = Device::cpu(),
        std::shared_ptr<ProcessGroup> tp_group = nullptr);

  HeadInputs head_inputs(const Tensor& ids, DType compute, bool training, Generator& dropout_gen) const override;
  std::string describe() const override;

 private:
  struct Norm {
    Variable weight, bias;  // bias: LayerNorm with model.bias only
  };
  struct Block {
    Norm attn_norm, mlp_norm;
    Variable wq, bq, wkv, bkv, q_norm, k_norm, wo, bo;
    Variable w_in, b_in, w_down, b_down;  // w_in: w_gate_up (swiglu) or w_fc (gelu)
  };
  Norm add_norm(const std::string& name);
  Variable norm(const Norm& n, const Variable& x, DType compute) const;
  // A block's two halves (Model::blocks): x -> x + attn(norm_1(x)), r -> r + mlp(norm_2(r)).
  // `layer` (0-based) names the block to the attention score probe.
  Variable attention_half(int64_t layer, const Block& b, const Variable& x, DType compute, bool training,
                          Generator& gen) const;
  Variable mlp_half(const Block& b, const Variable& r, DType compute, bool training, Generator& gen) const;
  RowParallelResidual branch_out_;  // attn.wo and mlp.w_down into the residual stream

  Variable tok_embeddings_, pos_embeddings_, lm_head_;
  Norm norm_f_;
  std::vector<Block> blocks_;
  Tensor positions_;
};

}  // namespace zt
