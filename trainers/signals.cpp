#include "trainers/signals.h"

#include <cmath>
#include <limits>

#include "framework/distributed/process_group.h"
#include "trainers/grad_clip.h"

namespace zt {

namespace {

// Reduces over a group of more than one rank, in place.
void sum_over(const std::shared_ptr<ProcessGroup>& group, Tensor& t, ReduceOp op) {
  if (group && group->size() > 1) group->all_reduce(t, op);
}

}  // namespace

StepSignals::StepSignals(const Model& model, const ParallelContext& par)
    : model_(model), par_(par), logits_(model.device()), scores_(model.config().n_layer, model.device()) {}

void StepSignals::add_gradients(const std::vector<Parameter>& params, const ParameterBuckets& layout,
                                const PieceGradient& gradient) {
  grad_norms_ = group_grad_norms(params, layout, gradient, par_.dp, par_.tp);
}

void StepSignals::before_update(const AdamW& adam) {
  before_.clear();
  for (const ShardPiece& piece : adam.layout().pieces()) before_.push_back(adam.master(piece).clone());
}

void StepSignals::after_update(const std::vector<Parameter>& params, const AdamW& adam) {
  const ParameterBuckets& layout = adam.layout();
  // Per group: squares of the update and of the new weights over this rank's pieces (the whole
  // parameters without ZeRO), TP-sharded ones apart, each accumulated on the device.
  const size_t n = kParamGroups.size();
  const Device device = params.empty() ? Device::cpu() : params.front().var.device();
  std::vector<ops::Moments> delta, weight;  // [kind * n + group], kind 1: sharded over TP
  for (size_t i = 0; i < 2 * n; ++i) delta.emplace_back(device), weight.emplace_back(device);
  const auto& pieces = layout.pieces();
  for (size_t i = 0; i < pieces.size() && i < before_.size(); ++i) {
    const Parameter& p = params[static_cast<size_t>(pieces[i].param)];
    const size_t slot = (p.shard.sharded() ? n : 0) + static_cast<size_t>(p.group);
    const Tensor now = adam.master(pieces[i]).reshape({1, -1});
    Tensor change = before_[i].reshape({1, -1});
    change.add_(now, -1.0);  // p_old - p_new: the same squares
    ops::accumulate_moments(change, change.shape()[1], 0, delta[slot]);
    ops::accumulate_moments(now, now.shape()[1], 0, weight[slot]);
  }
  before_.clear();
  // [kind][group][update, weight] squares, combined over the ranks as the norms are (one read).
  const auto slots = static_cast<int64_t>(2 * n);
  Tensor squares = Tensor::empty({slots, 2}, DType::f64, device);
  for (int64_t i = 0; i < slots; ++i) {
    squares.slice(0, i, i + 1).slice(1, 0, 1).copy_(delta[static_cast<size_t>(i)].sums.slice(0, 1, 2).reshape({1, 1}));
    squares.slice(0, i, i + 1).slice(1, 1, 2).copy_(weight[static_cast<size_t>(i)].sums.slice(0, 1, 2).reshape({1, 1}));
  }
  const std::vector<double> sq =
      combine_over_ranks(squares.view({2, slots}), layout.sharded(), par_.dp, par_.tp);  // [group][update, weight]
  update_ratios_.clear();
  for (ParamGroup g : kParamGroups) {
    bool any = false;
    for (const auto& p : params) any = any || p.group == g;
    if (!any) continue;
    const auto i = static_cast<size_t>(g);
    const double change = sq[2 * i], norm = sq[2 * i + 1];
    update_ratios_.emplace_back(g, norm > 0 ? std::sqrt(change / norm) : 0.0);
  }
}

std::vector<std::pair<std::string, double>> StepSignals::finish() {
  // Sums (logits) over both groups; maxima (logits, scores) likewise: one read each.
  const int64_t layers = model_.config().n_layer;
  Tensor maxima = Tensor::empty({2 + layers}, DType::f64, model_.device());
  maxima.slice(0, 0, 2).copy_(logits_.maxes);
  maxima.slice(0, 2, 2 + layers).copy_(scores_.maxima());
  Tensor sums = logits_.sums.clone();
  for (const auto& group : {par_.tp, par_.dp}) {
    sum_over(group, sums, ReduceOp::sum);
    sum_over(group, maxima, ReduceOp::max);
  }
  const std::vector<double> s = sums.to_vector<double>(), m = maxima.to_vector<double>();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const bool bad = s[3] > 0;  // a NaN logit: the mean and std are NaN too
  const double mean = s[2] > 0 && !bad ? s[0] / s[2] : nan;
  const double var = s[2] > 0 && !bad ? std::max(0.0, s[1] / s[2] - mean * mean) : nan;

  std::vector<std::pair<std::string, double>> out = {
      {"logits_absmax", bad ? nan : m[1]}, {"logits_mean", mean}, {"logits_std", std::sqrt(var)}};
  double all = -std::numeric_limits<double>::infinity();
  for (int64_t l = 0; l < layers; ++l) {
    const double v = m[static_cast<size_t>(2 + l)];
    all = std::isnan(v) || std::isnan(all) ? nan : std::max(all, v);
    out.emplace_back("attn_score_max/layer_" + std::to_string(l), v);
  }
  out.emplace_back("attn_score_max", all);
  for (const auto& [g, v] : grad_norms_) out.emplace_back(std::string("grad_norm/") + group_name(g), v);
  for (const auto& [g, v] : update_ratios_) out.emplace_back(std::string("update_ratio/") + group_name(g), v);
  return out;
}

}  // namespace zt
