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

void StepSignals::before_update(const std::vector<Parameter>& params) {
  before_.clear();
  for (const auto& p : params) before_.push_back(p.var.tensor().clone());
}

void StepSignals::after_update(const std::vector<Parameter>& params) {
  // Per group: squares of the update and of the new weights, sharded ones apart (summed over
  // the tensor-parallel group), each accumulated on the device.
  const bool tp = par_.tp && par_.tp->size() > 1;
  struct Group {
    ParamGroup group;
    ops::Moments delta[2], weight[2];  // [0] replicated, [1] sharded
  };
  std::vector<Group> groups;
  for (size_t i = 0; i < params.size() && i < before_.size(); ++i) {
    const Parameter& p = params[i];
    Group* g = nullptr;
    for (auto& existing : groups) g = existing.group == p.group ? &existing : g;
    if (!g) {
      const Device d = p.var.device();
      groups.push_back({p.group, {ops::Moments(d), ops::Moments(d)}, {ops::Moments(d), ops::Moments(d)}});
      g = &groups.back();
    }
    const int kind = tp && p.shard.sharded() ? 1 : 0;
    const Tensor now = p.var.tensor().reshape({1, -1});
    Tensor delta = before_[i].reshape({1, -1});
    delta.add_(now, -1.0);  // p_old - p_new: the same squares
    ops::accumulate_moments(delta, delta.shape()[1], 0, g->delta[kind]);
    ops::accumulate_moments(now, now.shape()[1], 0, g->weight[kind]);
  }
  before_.clear();
  if (groups.empty()) return;
  // [group][delta, weight] squares, sharded and replicated: one all-reduce, one read each.
  const Device device = params.front().var.device();
  const auto n = static_cast<int64_t>(groups.size());
  Tensor squares[2] = {Tensor::empty({n, 2}, DType::f64, device), Tensor::empty({n, 2}, DType::f64, device)};
  for (int64_t i = 0; i < n; ++i)
    for (int kind = 0; kind < 2; ++kind) {
      squares[kind].slice(0, i, i + 1).slice(1, 0, 1).copy_(groups[i].delta[kind].sums.slice(0, 1, 2).reshape({1, 1}));
      squares[kind].slice(0, i, i + 1).slice(1, 1, 2).copy_(groups[i].weight[kind].sums.slice(0, 1, 2).reshape({1, 1}));
    }
  if (tp) par_.tp->all_reduce(squares[1], ReduceOp::sum);
  const std::vector<double> rep = squares[0].to_vector<double>(), shard = squares[1].to_vector<double>();
  update_ratios_.clear();
  for (int64_t i = 0; i < n; ++i) {
    const double delta = rep[2 * i] + shard[2 * i], weight = rep[2 * i + 1] + shard[2 * i + 1];
    update_ratios_.emplace_back(groups[i].group, weight > 0 ? std::sqrt(delta / weight) : 0.0);
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
