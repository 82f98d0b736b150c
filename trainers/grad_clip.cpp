#include "trainers/grad_clip.h"

#include <cmath>

#include "framework/distributed/process_group.h"
#include "ops/device_dispatch.h"
#include "trainers/optim_cuda.h"

namespace zt {

namespace {

// Sum of squares of one gradient in f64. Blocks of fixed size summed in order keep the
// result independent of the thread count.
double sum_squares(const Tensor& grad) {
  Tensor g = grad.to(Device::cpu()).to(DType::f32).contiguous();
  const float* p = g.data<float>();
  const int64_t n = g.numel();
  constexpr int64_t kBlock = 1 << 14;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
#pragma omp parallel for schedule(static) if (blocks > 4)
  for (int64_t b = 0; b < blocks; ++b) {
    double s = 0;
    const int64_t end = std::min(n, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < end; ++i) s += static_cast<double>(p[i]) * p[i];
    partial[static_cast<size_t>(b)] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

// Sum of squares of some gradients (any dtype, any device).
double squares_of(const std::vector<Tensor>& grads) {
  double total = 0;
  // Device gradients: one multi-tensor reduction and one read back, not a copy per tensor.
  std::vector<Tensor> device_grads;
  std::vector<const float*> data;
  std::vector<int64_t> sizes;
  int device = -1;
  for (const Tensor& g : grads) {
    if (g.device().is_cuda() && (device < 0 || device == g.device().index)) {
      device = g.device().index;
      device_grads.push_back(g.to(DType::f32).contiguous());
      data.push_back(device_grads.back().data<float>());
      sizes.push_back(g.numel());
      continue;
    }
    total += sum_squares(g);
  }
  // (device_grads holds CUDA tensors only: the CPU place of ZT_ON_DEVICE is never taken.)
  if (!data.empty())
    total += ZT_ON_DEVICE(device_grads.front(), 0.0, optim_cuda::sum_squares(device, data, sizes));
  return total;
}

// Sum of squares of the gradients of the parameters that pass `keep`.
template <class Keep>
double squares_of(const std::vector<Parameter>& params, Keep&& keep) {
  std::vector<Tensor> grads;
  for (const auto& p : params)
    if (p.var.has_grad() && keep(p)) grads.push_back(p.var.grad());
  return squares_of(grads);
}

}  // namespace

double global_grad_norm(const std::vector<Parameter>& params, const std::shared_ptr<ProcessGroup>& tp_group) {
  if (!tp_group || tp_group->size() == 1) return std::sqrt(squares_of(params, [](const Parameter&) { return true; }));
  // Shards are disjoint pieces of one tensor: their squares add up over the group. Replicated
  // parameters hold the same gradient on every rank: counted once.
  const double replicated = squares_of(params, [](const Parameter& p) { return !p.shard.sharded(); });
  const double sharded = squares_of(params, [](const Parameter& p) { return p.shard.sharded(); });
  const Device device = params.empty() ? Device::cpu() : params.front().var.device();
  return std::sqrt(
      combine_over_ranks(Tensor::from_vector(std::vector<double>{replicated, sharded}, {2, 1}, device), false,
                         nullptr, tp_group)[0]);
}

std::vector<double> combine_over_ranks(Tensor sums, bool dp_sharded, const std::shared_ptr<ProcessGroup>& dp_group,
                                       const std::shared_ptr<ProcessGroup>& tp_group) {
  ZT_CHECK(sums.dim() == 2 && sums.shape()[0] == 2 && sums.dtype() == DType::f64, "combine_over_ranks: sums ",
           shape_str(sums.shape()), " ", dtype_name(sums.dtype()), ", expected f64 [2, K]");
  if (dp_sharded && dp_group && dp_group->size() > 1) dp_group->all_reduce(sums, ReduceOp::sum);
  if (tp_group && tp_group->size() > 1) {
    Tensor shards = sums.select(0, 1).clone();
    tp_group->all_reduce(shards, ReduceOp::sum);
    sums.select(0, 1).copy_(shards);
  }
  const std::vector<double> v = sums.to_vector<double>();
  const size_t k = v.size() / 2;
  std::vector<double> total(k);
  for (size_t i = 0; i < k; ++i) total[i] = v[i] + v[k + i];
  return total;
}

namespace {
// Squares of the pieces' gradients per slot ([0, K) over TP-replicated parameters, [K, 2K) over
// TP-sharded ones, `slot_of` giving the slot in [0, K)), as combine_over_ranks takes them.
template <class SlotOf>
Tensor piece_squares(const std::vector<Parameter>& params, const ParameterBuckets& layout,
                     const PieceGradient& gradient, int64_t k, SlotOf&& slot_of) {
  std::vector<std::vector<Tensor>> grads(static_cast<size_t>(2 * k));
  for (const ShardPiece& piece : layout.pieces()) {
    Tensor g = gradient(piece);
    if (!g.defined()) continue;
    const Parameter& p = params[static_cast<size_t>(piece.param)];
    grads[static_cast<size_t>((p.shard.sharded() ? k : 0) + slot_of(p))].push_back(std::move(g));
  }
  std::vector<double> squares;
  for (const auto& g : grads) squares.push_back(g.empty() ? 0.0 : squares_of(g));
  const Device device = params.empty() ? Device::cpu() : params.front().var.device();
  return Tensor::from_vector(squares, {2, k}, device);
}
}  // namespace

double sharded_grad_norm(const std::vector<Parameter>& params, const ParameterBuckets& layout,
                         const PieceGradient& gradient, const std::shared_ptr<ProcessGroup>& dp_group,
                         const std::shared_ptr<ProcessGroup>& tp_group) {
  // Pieces are disjoint over the data-parallel group: their squares add up over it.
  const Tensor sums = piece_squares(params, layout, gradient, 1, [](const Parameter&) { return 0; });
  return std::sqrt(combine_over_ranks(sums, true, dp_group, tp_group)[0]);
}

std::vector<std::pair<ParamGroup, double>> group_grad_norms(const std::vector<Parameter>& params,
                                                            const ParameterBuckets& layout,
                                                            const PieceGradient& gradient,
                                                            const std::shared_ptr<ProcessGroup>& dp_group,
                                                            const std::shared_ptr<ProcessGroup>& tp_group) {
  const auto n = static_cast<int64_t>(kParamGroups.size());
  const Tensor sums = piece_squares(params, layout, gradient, n, [](const Parameter& p) { return static_cast<int64_t>(p.group); });
  const std::vector<double> squares = combine_over_ranks(sums, layout.sharded(), dp_group, tp_group);
  std::vector<std::pair<ParamGroup, double>> out;
  for (ParamGroup g : kParamGroups) {
    bool any = false;
    for (const auto& p : params) any = any || p.group == g;
    if (any) out.emplace_back(g, std::sqrt(squares[static_cast<size_t>(g)]));
  }
  return out;
}

double clip_factor(double max_norm, double norm) {
  if (!(max_norm > 0) || !(norm > max_norm)) return 1.0;
  return max_norm / (norm + 1e-6);
}

double clip_grad_norm(std::vector<Parameter>& params, double max_norm, double norm) {
  const double factor = clip_factor(max_norm, norm);
  if (factor == 1.0) return 1.0;
  for (auto& p : params) {
    if (!p.var.has_grad()) continue;
    // A preassigned buffer (a data-parallel bucket's view) is the leaf's own: in place.
    if (p.var.impl()->grad_preassigned) {
      Tensor g = p.var.grad();
      g.scale_(factor);
      continue;
    }
    // The engine may hand a leaf a gradient buffer that another tensor still shares; scale a
    // private copy rather than writing through a shared one.
    Tensor g = p.var.grad().clone();
    g.scale_(factor);
    p.var.set_grad(g);
  }
  return factor;
}

}  // namespace zt
