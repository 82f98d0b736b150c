#include "models/model.h"

#include <algorithm>
#include <cstdio>

#include "framework/autograd/checkpoint.h"
#include "framework/autograd/grad_mode.h"
#include "framework/distributed/process_group.h"
#include "framework/error.h"
#include "models/gpt.h"
#include "models/llama.h"
#include "ops/linear_cross_entropy.h"
#include "ops/matmul.h"
#include "ops/tensor_parallel.h"

namespace zt {

Model::Model(const ModelConfig& config, Device device, std::shared_ptr<ProcessGroup> tp_group)
    : config_(config), device_(device), tp_(std::move(tp_group)) {
  config_.validate();
  config_.validate_tensor_parallel(tp_size());
}

int Model::tp_size() const { return tp_ ? tp_->size() : 1; }
int Model::tp_rank() const { return tp_ ? tp_->rank() : 0; }

std::pair<int64_t, int64_t> Model::check_ids(const Tensor& ids, DType compute) const {
  ZT_CHECK(ids.dim() == 2, "model forward: token ids must be [batch, time], got shape ", shape_str(ids.shape()));
  ZT_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, "model forward: token ids must be i32 or i64, got ",
           dtype_name(ids.dtype()));
  ZT_CHECK(is_floating(compute), "model forward: compute dtype must be f32, bf16 or f64, got ", dtype_name(compute));
  ZT_CHECK(ids.device() == device_, "model forward: token ids on ", ids.device().str(), ", model on ", device_.str());
  const int64_t B = ids.size(0), T = ids.size(1);
  ZT_CHECK(B >= 1 && T >= 1 && T <= config_.seq_len, "model forward: ", T,
           " tokens per sequence, the model's seq_len is ", config_.seq_len);
  return {B, T};
}

Variable Model::blocks(const BlockHalves& half, Variable x, Generator& gen) const {
  const std::string& mode = config_.activation_checkpointing;
  auto region = [&gen](std::function<Variable(const Variable&)> f, const Variable& in) {
    return checkpoint([f = std::move(f)](const std::vector<Variable>& v) { return f(v[0]); }, {in}, {&gen});
  };
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    auto attention = [half, l](const Variable& v) { return half(l, BlockHalf::attention, v); };
    auto mlp = [half, l](const Variable& v) { return half(l, BlockHalf::mlp, v); };
    if (mode == "block") {
      x = region([attention, mlp](const Variable& v) { return mlp(attention(v)); }, x);
    } else {
      const Variable r = attention(x);
      x = mode == "mlp" ? region(mlp, r) : mlp(r);
    }
  }
  return x;
}

Variable Model::forward(const Tensor& ids, DType compute, bool training, Generator& dropout_gen) const {
  // The head multiplies by the whole padded table (this rank's rows of it): rows of
  // padded_vocab() elements keep the logits' leading dimension aligned (cuBLASLt's fast
  // kernels). The loss leaves the padded columns out (num_classes = vocab_size) and gives them
  // exactly zero gradient, so the padded rows get none from the head.
  const HeadInputs in = head_inputs(ids, compute, training, dropout_gen);
  return ops::linear(ops::copy_to_tensor_parallel(in.hidden, tp_), in.weight);
}

ops::CrossEntropyResult Model::loss(const Tensor& ids, const Tensor& targets, const LossOptions& o, DType compute,
                                    bool training, Generator& dropout_gen) const {
  return head_loss(head_inputs(ids, compute, training, dropout_gen), targets, o);
}

ops::CrossEntropyResult Model::head_loss(const HeadInputs& in, const Tensor& targets, const LossOptions& o) const {
  ops::CrossEntropyOptions xo = o.loss;
  xo.num_classes = config_.vocab_size;  // the logits' columns past it are the table's padding
  xo.group = tp_;
  // Under tensor parallelism the hidden states' gradient is summed over the group: by copy_to
  // before the unfused head's product, inside the fused op (which all-reduces dhidden itself).
  if (o.fused_head) {
    if (o.logit_moments) logit_moments(in, *o.logit_moments);
    return ops::linear_cross_entropy(in.hidden, in.weight, targets.reshape({-1}), xo);
  }
  const Variable logits = ops::linear(ops::copy_to_tensor_parallel(in.hidden, tp_), in.weight);
  // Read before the loss, which may overwrite the logits with their gradient.
  if (o.logit_moments)
    ops::accumulate_moments(logits.tensor(), real_columns(in.weight.shape()[0]), 0, *o.logit_moments);
  return ops::cross_entropy(logits, targets.reshape({-1}), xo);
}

int64_t Model::real_columns(int64_t local) const {
  // This rank's columns are global ids [rank * local, (rank + 1) * local); the real ones end at
  // vocab_size (a last rank may hold padding only).
  return std::clamp<int64_t>(config_.vocab_size - tp_rank() * local, 0, local);
}

void Model::logit_moments(const HeadInputs& in, ops::Moments& acc) const {
  NoGradGuard no_grad;
  const Tensor hidden = in.hidden.tensor(), weight = in.weight.tensor();  // [N, C], [Vp / T, C]
  const int64_t n = hidden.shape()[0], local = weight.shape()[0], real = real_columns(local);
  constexpr int64_t kChunkLogits = int64_t{1} << 26;
  const int64_t rows = std::max<int64_t>(1, kChunkLogits / std::max<int64_t>(local, 1));
  for (int64_t r = 0; r < n; r += rows) {
    const Variable logits = ops::linear(Variable(hidden.slice(0, r, std::min(n, r + rows))), Variable(weight));
    ops::accumulate_moments(logits.tensor(), real, 0, acc);
  }
}

std::unique_ptr<Model> make_model(const ModelConfig& config, Generator& init, Device device,
                                  std::shared_ptr<ProcessGroup> tp_group) {
  // The Model constructor validates the config (an unknown arch included) before either family
  // builds anything.
  if (config.is_gpt2()) return std::make_unique<Gpt>(config, init, device, std::move(tp_group));
  return std::make_unique<Llama>(config, init, device, std::move(tp_group));
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
