#pragma once
// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, PyTorch's formulation:
//   p -= lr * wd * p                      (only for parameters with decay = true)
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// State (m, v: f32, like the parameters; t) is saved in checkpoints under the parameter's name.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/parameter_registry.h"

namespace zt {

struct AdamWOptions {
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
};

class AdamW {
 public:
  AdamW(std::vector<Parameter>& params, AdamWOptions options);

  // One update with learning rate lr; parameters without a gradient are left alone. Each
  // gradient is used times grad_scale (gradient clipping's factor, grad_clip.h: clip_factor),
  // exactly as if it had been scaled in place first, without that extra pass.
  void step(double lr, double grad_scale = 1.0);

  int64_t steps_taken() const { return t_; }
  // For checkpoints: m and v of every parameter ("<name>"), and t.
  const std::map<std::string, Tensor>& first_moments() const { return m_; }
  const std::map<std::string, Tensor>& second_moments() const { return v_; }
  // Restores state saved by a run with the same parameters (shapes are checked).
  void load_state(int64_t t, const std::map<std::string, Tensor>& m, const std::map<std::string, Tensor>& v);

 private:
  std::vector<Parameter>& params_;
  AdamWOptions opt_;
  int64_t t_ = 0;
  std::map<std::string, Tensor> m_, v_;
};

}  // namespace zt
