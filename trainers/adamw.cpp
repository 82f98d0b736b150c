#include "trainers/adamw.h"

#include <cmath>

#include "ops/device_dispatch.h"
#include "trainers/optim_cuda.h"

namespace zt {

namespace {

struct Scalars {
  float b1, b2, eps, decay_factor, step_size, inv_sqrt_bc2;
  double grad_scale;
};

// The update on contiguous host f32 arrays. Elementwise, so threads never change results.
// The gradient is scaled as Tensor::scale_ does on the CPU (in f64, rounded to f32).
void update_host(float* p, const float* g, float* m, float* v, int64_t n, const Scalars& s) {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const float gi = s.grad_scale == 1.0 ? g[i] : static_cast<float>(static_cast<double>(g[i]) * s.grad_scale);
    const float mi = s.b1 * m[i] + (1.0f - s.b1) * gi;
    const float vi = s.b2 * v[i] + (1.0f - s.b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * s.decay_factor - s.step_size * mi / (std::sqrt(vi) * s.inv_sqrt_bc2 + s.eps);
  }
}


}  // namespace

AdamW::AdamW(std::vector<Parameter>& params, AdamWOptions options) : params_(params), opt_(options) {
  for (const auto& p : params_) {
    const Tensor& w = p.var.tensor();
    ZT_CHECK(w.dtype() == DType::f32, "AdamW: parameter '", p.name, "' is ", dtype_name(w.dtype()),
             "; parameters are kept in f32");
    m_[p.name] = Tensor::zeros(w.shape(), DType::f32, w.device());
    v_[p.name] = Tensor::zeros(w.shape(), DType::f32, w.device());
  }
}

void AdamW::step(double lr, double grad_scale) {
  ++t_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(t_));
  std::vector<optim_cuda::AdamWTensor> device_tensors;  // updated together after the loop
  std::vector<Tensor> keep_alive;                       // f32 copies of non-f32 gradients
  Tensor on_device;                                     // one of them: where the launch goes
  for (auto& p : params_) {
    if (!p.var.has_grad()) continue;
    Scalars s{static_cast<float>(opt_.beta1),
              static_cast<float>(opt_.beta2),
              static_cast<float>(opt_.eps),
              static_cast<float>(p.decay ? 1.0 - lr * opt_.weight_decay : 1.0),
              static_cast<float>(lr / bc1),
              static_cast<float>(1.0 / std::sqrt(bc2)),
              grad_scale};
    Tensor& w = p.var.tensor();
    // The bf16 compute copy, when the device kernel may rewrite it: then the next forward
    // needs no cast (framework/autograd/mixed_precision.h). Asked before the version bump.
    Tensor* copy = rewritable_compute_copy(*p.var.impl());
    uint16_t* shadow = copy ? static_cast<uint16_t*>(copy->raw_data()) : nullptr;
    w.storage()->bump_version();  // written below through raw pointers: cached casts are stale
    Tensor g = p.var.grad().to(DType::f32);
    Tensor& m = m_.at(p.name);
    Tensor& v = v_.at(p.name);
    if (w.device().is_cpu()) {
      ZT_CHECK(w.is_contiguous(), "AdamW: parameter '", p.name, "' is not contiguous");
      g = g.contiguous();
      update_host(w.data<float>(), g.data<float>(), m.data<float>(), v.data<float>(), w.numel(), s);
    } else {
      ZT_CHECK(w.is_contiguous(), "AdamW: parameter '", p.name, "' is not contiguous");
      ZT_CHECK(!on_device.defined() || on_device.device() == w.device(), "AdamW: parameters on ",
               on_device.device().str(), " and ", w.device().str(), "; one optimizer updates one device");
      on_device = w;
      g = g.contiguous();
      keep_alive.push_back(g);
      device_tensors.push_back({w.data<float>(), g.data<float>(), m.data<float>(), v.data<float>(), w.numel(),
                                s.decay_factor, shadow});
      // The kernel rewrites the cached bf16 copy with the new weights: it is current again.
      if (shadow) compute_copy_rewritten(*p.var.impl());
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

void AdamW::load_state(int64_t t, const std::map<std::string, Tensor>& m, const std::map<std::string, Tensor>& v) {
  ZT_CHECK(t >= 0, "AdamW state: negative step count ", t);
  for (const auto& p : params_) {
    for (auto* pair : {&m, &v}) {
      const char* what = pair == &m ? "first moment" : "second moment";
      auto it = pair->find(p.name);
      ZT_CHECK(it != pair->end(), "AdamW state: no ", what, " for parameter '", p.name, "'");
      ZT_CHECK(it->second.shape() == p.var.shape(), "AdamW state: ", what, " of '", p.name, "' has shape ",
               shape_str(it->second.shape()), ", the parameter has ", shape_str(p.var.shape()));
    }
  }
  for (const auto& p : params_) {
    m_.at(p.name).copy_(m.at(p.name));
    v_.at(p.name).copy_(v.at(p.name));
  }
  t_ = t;
}

}  // namespace zt
