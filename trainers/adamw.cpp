#include "trainers/adamw.h"

#include <cmath>
#include <limits>

#include "framework/autograd/mixed_precision.h"
#include "ops/device_dispatch.h"
#include "trainers/optim_cuda.h"

namespace zt {

namespace {

struct Scalars {
  float b1, b2, eps, decay_factor, step_size, inv_sqrt_bc2;
  double grad_scale;
};

// The update on contiguous host f32 arrays. Elementwise, so threads never change results.
// The gradient is scaled as Tensor::scale_ does on the CPU (in f64, rounded to f32). With
// `p_bf16`, the new weights rounded to bf16 there too (as a cast rounds them: dtype.h's bf16).
void update_host(float* p, const float* g, float* m, float* v, int64_t n, const Scalars& s, bf16* p_bf16) {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const float gi = s.grad_scale == 1.0 ? g[i] : static_cast<float>(static_cast<double>(g[i]) * s.grad_scale);
    const float mi = s.b1 * m[i] + (1.0f - s.b1) * gi;
    const float vi = s.b2 * v[i] + (1.0f - s.b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * s.decay_factor - s.step_size * mi / (std::sqrt(vi) * s.inv_sqrt_bc2 + s.eps);
    if (p_bf16) p_bf16[i] = bf16(p[i]);
  }
}

}  // namespace

PieceGradient gradient_from_params(const std::vector<Parameter>& params) {
  return [&params](const ShardPiece& piece) -> Tensor {
    const Parameter& p = params[static_cast<size_t>(piece.param)];
    if (!p.var.has_grad()) return Tensor();
    const Tensor& g = p.var.grad();
    if (piece.numel == g.numel()) return g;
    return g.contiguous().view({-1}).slice(0, piece.param_begin, piece.param_begin + piece.numel);
  };
}

AdamW::AdamW(std::vector<Parameter>& params, AdamWOptions options, std::shared_ptr<const ParameterBuckets> layout,
             DType weights)
    : params_(params), opt_(options), layout_(std::move(layout)) {
  ZT_CHECK(layout_, "AdamW: no parameter layout");
  for (const auto& p : params_) {
    const Tensor& w = p.var.tensor();
    ZT_CHECK(w.dtype() == DType::f32, "AdamW: parameter '", p.name, "' is ", dtype_name(w.dtype()),
             "; parameters are kept in f32");
    ZT_CHECK(w.is_contiguous(), "AdamW: parameter '", p.name, "' is not contiguous");
  }
  const Device device = params_.empty() ? Device::cpu() : params_.front().var.device();
  for (size_t b = 0; b < layout_->buckets().size(); ++b) {
    const int64_t n = layout_->shard_numel(static_cast<int64_t>(b));
    m_.push_back(Tensor::zeros({n}, DType::f32, device));
    v_.push_back(Tensor::zeros({n}, DType::f32, device));
  }
  if (weights == DType::f32) return;
  ZT_CHECK(weights == DType::bf16 && layout_->sharded(), "AdamW: ", dtype_name(weights),
           " weights with the masters kept by the optimizer need bf16 and a sharded layout (", layout_->shards(),
           " shard(s))");
  // The masters of this rank's pieces, then every leaf's bf16 weights in its bucket slot.
  for (size_t b = 0; b < layout_->buckets().size(); ++b) {
    master_.push_back(Tensor::zeros({layout_->shard_numel(static_cast<int64_t>(b))}, DType::f32, device));
    weights_.push_back(Tensor::zeros({layout_->buckets()[b].numel}, weights, device));
  }
  for (const ShardPiece& piece : layout_->pieces()) {
    const Tensor w = params_[static_cast<size_t>(piece.param)].var.tensor().view({-1});
    master(piece).copy_(w.slice(0, piece.param_begin, piece.param_begin + piece.numel));
  }
  for (size_t b = 0; b < layout_->buckets().size(); ++b) {
    for (const BucketSlot& s : layout_->buckets()[b].slots) {
      Variable& var = params_[static_cast<size_t>(s.param)].var;
      Tensor slot = weights_[b].slice(0, s.offset, s.offset + s.numel).view(var.shape());
      slot.copy_(var.tensor());  // rounded as the compute copy would be
      make_compute_resident(*var.impl(), slot);
    }
  }
}

AdamW::AdamW(std::vector<Parameter>& params, AdamWOptions options)
    : AdamW(params, options,
            std::make_shared<const ParameterBuckets>(params, std::numeric_limits<int64_t>::max() / 2, 1, 0)) {}

Tensor AdamW::state_piece(const std::vector<Tensor>& flat, const ShardPiece& piece) const {
  return flat[static_cast<size_t>(piece.bucket)].slice(0, piece.shard_offset, piece.shard_offset + piece.numel);
}

int64_t AdamW::state_bytes() const { return (keeps_masters() ? 3 : 2) * 4 * layout_->shard_elements(); }

int64_t AdamW::weight_bytes() const {
  int64_t n = 0;
  if (keeps_masters())
    for (const Tensor& w : weights_) n += w.nbytes();
  else
    for (const Parameter& p : params_) n += p.var.tensor().nbytes();
  return n;
}

Tensor AdamW::master(const ShardPiece& piece) const {
  if (keeps_masters()) return state_piece(master_, piece);
  const Tensor& w = params_[static_cast<size_t>(piece.param)].var.tensor();
  return w.view({-1}).slice(0, piece.param_begin, piece.param_begin + piece.numel);
}

void AdamW::step(double lr, double grad_scale) { step(lr, grad_scale, gradient_from_params(params_)); }

void AdamW::step(double lr, double grad_scale, const PieceGradient& gradient) {
  ++t_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(t_));
  std::vector<optim_cuda::AdamWTensor> device_tensors;  // updated together after the loop
  std::vector<Tensor> keep_alive;                       // f32 copies of non-f32 gradients
  Tensor on_device;                                     // one of them: where the launch goes
  for (const ShardPiece& piece : layout_->pieces()) {
    Parameter& p = params_[static_cast<size_t>(piece.param)];
    Tensor g = gradient(piece);
    if (!g.defined()) continue;
    Scalars s{static_cast<float>(opt_.beta1),
              static_cast<float>(opt_.beta2),
              static_cast<float>(opt_.eps),
              static_cast<float>(p.decay ? 1.0 - lr * opt_.weight_decay : 1.0),
              static_cast<float>(lr / bc1),
              static_cast<float>(1.0 / std::sqrt(bc2)),
              grad_scale};
    Tensor& w = p.var.tensor();
    uint16_t* shadow = nullptr;  // bf16 weights written with the new masters
    if (keeps_masters()) {
      // The leaf is compute-resident: its bf16 elements of this piece are the ones to write.
      shadow = static_cast<uint16_t*>(w.raw_data()) + piece.param_begin;
    } else {
      // The bf16 compute copy, when the device kernel may rewrite it: then the next forward
      // needs no cast (framework/autograd/mixed_precision.h). Asked before the version bump.
      // Only a piece that is the whole parameter can: a shard's weights arrive by all-gather.
      Tensor* copy = piece.numel == w.numel() ? rewritable_compute_copy(*p.var.impl()) : nullptr;
      shadow = copy ? static_cast<uint16_t*>(copy->raw_data()) : nullptr;
    }
    w.storage()->bump_version();  // written below through raw pointers: cached casts are stale
    g = g.to(DType::f32).contiguous();
    const Tensor master_piece = master(piece);
    float* weights = master_piece.data<float>();
    const Tensor m = state_piece(m_, piece), v = state_piece(v_, piece);
    if (w.device().is_cpu()) {
      update_host(weights, g.data<float>(), m.data<float>(), v.data<float>(), piece.numel, s,
                  keeps_masters() ? reinterpret_cast<bf16*>(shadow) : nullptr);
    } else {
      ZT_CHECK(!on_device.defined() || on_device.device() == w.device(), "AdamW: parameters on ",
               on_device.device().str(), " and ", w.device().str(), "; one optimizer updates one device");
      on_device = w;
      keep_alive.push_back(g);
      device_tensors.push_back({weights, g.data<float>(), m.data<float>(), v.data<float>(), piece.numel,
                                s.decay_factor, shadow});
      // The kernel rewrites the cached bf16 copy with the new weights: it is current again.
      if (shadow && !keeps_masters()) compute_copy_rewritten(*p.var.impl());
    }
  }
  if (on_device.defined()) {  // one multi-tensor kernel (a few launches), no host sync
    ZT_ON_DEVICE(on_device, ZT_FAIL("AdamW: no kernel for parameters on ", on_device.device().str()),
                 optim_cuda::adamw_update(on_device.device().index, device_tensors, static_cast<float>(opt_.beta1),
                                          static_cast<float>(opt_.beta2), static_cast<float>(opt_.eps),
                                          static_cast<float>(lr / bc1), static_cast<float>(1.0 / std::sqrt(bc2)),
                                          static_cast<float>(grad_scale)));
  }
}

AdamW::FullState AdamW::full_state(ProcessGroup* dp, int root) const {
  FullState out;
  if (!layout_->sharded()) {
    for (const ShardPiece& piece : layout_->pieces()) {
      const Parameter& p = params_[static_cast<size_t>(piece.param)];
      out.m[p.name] = state_piece(m_, piece).view(p.var.shape());
      out.v[p.name] = state_piece(v_, piece).view(p.var.shape());
    }
    return out;
  }
  ZT_CHECK(dp && dp->size() == layout_->shards(), "AdamW: the state is sharded ", layout_->shards(),
           " ways; gathering it needs the data-parallel group of that size");
  std::vector<std::pair<const std::vector<Tensor>*, std::map<std::string, Tensor>*>> gathered = {{&m_, &out.m},
                                                                                                  {&v_, &out.v}};
  if (keeps_masters()) gathered.emplace_back(&master_, &out.weights);
  for (size_t b = 0; b < layout_->buckets().size(); ++b) {
    const int64_t n = layout_->shard_numel(static_cast<int64_t>(b));
    for (auto [flat, map] : gathered) {
      Tensor whole = Tensor::zeros({layout_->shards(), n}, DType::f32, (*flat)[b].device());
      dp->all_gather((*flat)[b], whole);
      if (dp->rank() != root) continue;
      const Tensor host = whole.to(Device::cpu()).view({-1});
      for (const BucketSlot& s : layout_->buckets()[b].slots) {
        const Parameter& p = params_[static_cast<size_t>(s.param)];
        (*map)[p.name] = host.slice(0, s.offset, s.offset + s.numel).view(p.var.shape());
      }
    }
  }
  return out;
}

void AdamW::check_per_parameter(const std::map<std::string, Tensor>& map, const char* what) const {
  for (const auto& p : params_) {
    auto it = map.find(p.name);
    ZT_CHECK(it != map.end(), "AdamW state: no ", what, " for parameter '", p.name, "'");
    ZT_CHECK(it->second.shape() == p.var.shape(), "AdamW state: ", what, " of '", p.name, "' has shape ",
             shape_str(it->second.shape()), ", the parameter has ", shape_str(p.var.shape()));
  }
}

void AdamW::load_state(int64_t t, const std::map<std::string, Tensor>& m, const std::map<std::string, Tensor>& v) {
  ZT_CHECK(t >= 0, "AdamW state: negative step count ", t);
  check_per_parameter(m, "first moment");
  check_per_parameter(v, "second moment");
  for (const ShardPiece& piece : layout_->pieces()) {
    const std::string& name = params_[static_cast<size_t>(piece.param)].name;
    for (auto [flat, map] : {std::pair{&m_, &m}, std::pair{&v_, &v}}) {
      const Tensor src = map->at(name).contiguous().view({-1});
      Tensor dst = state_piece(*flat, piece);
      dst.copy_(src.slice(0, piece.param_begin, piece.param_begin + piece.numel));
    }
  }
  t_ = t;
}

void AdamW::load_masters(const std::map<std::string, Tensor>& weights) {
  if (!keeps_masters()) return;
  check_per_parameter(weights, "master weight");
  for (const ShardPiece& piece : layout_->pieces()) {
    const Tensor src = weights.at(params_[static_cast<size_t>(piece.param)].name).contiguous().view({-1});
    master(piece).copy_(src.slice(0, piece.param_begin, piece.param_begin + piece.numel));
  }
  for (auto& p : params_) p.var.tensor().copy_(weights.at(p.name));  // rounded as a cast rounds
}

}  // namespace zt
