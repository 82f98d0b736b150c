#include "ops/rope.h"

#include <cmath>

#include "framework/autograd/node.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"
#include "ops/rope_kernels.h"

namespace zt::ops {

namespace {

struct QkNormRopeNode : Node {
  SavedTensor qkv, q_gain, k_gain, rstd;
  QkNormRopeShape shape;
  DType dtype;
  QkNormRopeNode(const Variable& vx, const Variable& vq, const Variable& vk, Tensor s, const QkNormRopeShape& sh)
      : Node("qk_norm_rope", {vx, vq, vk}), rstd(std::move(s)), shape(sh), dtype(vx.dtype()) {
    const bool norm = vq.defined();
    // qkv is read only for QK-norm's gradients; the gains for dqkv.
    if (norm) qkv = vx.tensor();
    if (norm && needs_input_grad(0)) {
      q_gain = vq.tensor();
      k_gain = vk.tensor();
    }
  }
  std::vector<Tensor> backward(const Tensor& grad) override {
    std::vector<Tensor> grads(3);
    const Tensor g = grad_as(grad, dtype);
    Tensor* dx = needs_input_grad(0) ? &grads[0] : nullptr;
    Tensor* dq = needs_input_grad(1) ? &grads[1] : nullptr;
    Tensor* dk = needs_input_grad(2) ? &grads[2] : nullptr;
    const Tensor &sx = qkv.get(*this), &sq = q_gain.get(*this), &sk = k_gain.get(*this), &sr = rstd.get(*this);
    ZT_ON_DEVICE(g, qk_norm_rope_backward_cpu(g, sx, sq, sk, sr, shape, dx, dq, dk),
                 qk_norm_rope_backward_cuda(g, sx, sq, sk, sr, shape, dx, dq, dk));
    return grads;
  }
  void release_saved() override {
    for (SavedTensor* t : {&qkv, &q_gain, &k_gain, &rstd}) t->release();
  }
};

}  // namespace

Variable qk_norm_rope(const Variable& qkv, int64_t n_head, int64_t n_kv_head, double rope_theta, const Variable& q_gain,
                      const Variable& k_gain, double eps) {
  const char* op = "qk_norm_rope";
  check_defined(op, "qkv", qkv);
  check_floating(op, "qkv", qkv.tensor());
  const Shape& xs = qkv.shape();
  ZT_CHECK(xs.size() == 3, "qk_norm_rope: qkv must be [B, T, (n_head + 2 n_kv_head) head_dim], got ", shape_str(xs));
  ZT_CHECK(n_head >= 1 && n_kv_head >= 1, "qk_norm_rope: n_head and n_kv_head must be >= 1, got n_head ", n_head,
           ", n_kv_head ", n_kv_head);
  ZT_CHECK(n_head % n_kv_head == 0, "qk_norm_rope: n_kv_head ", n_kv_head, " must divide n_head ", n_head);
  const int64_t heads = n_head + 2 * n_kv_head;
  ZT_CHECK(xs[2] > 0 && xs[2] % heads == 0, "qk_norm_rope: qkv ", shape_str(xs), ": the last dimension ", xs[2],
           " must be n_head + 2 n_kv_head = ", heads, " heads of head_dim >= 1");
  const int64_t D = xs[2] / heads;
  ZT_CHECK(std::isfinite(rope_theta) && rope_theta >= 0,
           "qk_norm_rope: rope_theta must be finite and >= 0 (0: no RoPE), got ", rope_theta);
  ZT_CHECK(rope_theta == 0 || D % 2 == 0, "qk_norm_rope: RoPE needs an even head_dim, got head_dim ", D, " (qkv ",
           shape_str(xs), ", n_head ", n_head, ", n_kv_head ", n_kv_head, ")");
  ZT_CHECK(q_gain.defined() == k_gain.defined(),
           "qk_norm_rope: q_gain and k_gain must be both defined (QK-norm) or both undefined, got q_gain ",
           q_gain.defined() ? "defined" : "undefined", ", k_gain ", k_gain.defined() ? "defined" : "undefined");
  const bool norm = q_gain.defined();
  if (norm) {
    for (const auto& [name, gain] : {std::pair<const char*, const Variable*>{"q_gain", &q_gain}, {"k_gain", &k_gain}}) {
      check_same_dtype(op, "qkv", qkv.tensor(), name, gain->tensor());
      check_same_device(op, "qkv", qkv.tensor(), name, gain->tensor());
      ZT_CHECK(gain->shape() == Shape{D}, "qk_norm_rope: ", name, " ", shape_str(gain->shape()),
               " must be [head_dim] = [", D, "]");
    }
    ZT_CHECK(std::isfinite(eps) && eps >= 0, "qk_norm_rope: eps must be finite and >= 0, got ", eps);
  }
  QkNormRopeShape s;
  s.tokens = xs[0] * xs[1];
  s.T = xs[1];
  s.n_head = n_head;
  s.n_kv_head = n_kv_head;
  s.D = D;
  s.rope_theta = rope_theta;
  s.eps = eps;
  const Tensor none;
  const Tensor& qg = norm ? q_gain.tensor() : none;
  const Tensor& kg = norm ? k_gain.tensor() : none;
  Tensor rstd;
  Tensor y = ZT_ON_DEVICE(qkv.tensor(), qk_norm_rope_forward_cpu(qkv.tensor(), qg, kg, s, rstd),
                          qk_norm_rope_forward_cuda(qkv.tensor(), qg, kg, s, rstd));
  if (!needs_grad({qkv, q_gain, k_gain})) return Variable(y);
  return Variable::from_op(y, std::make_shared<QkNormRopeNode>(qkv, q_gain, k_gain, rstd, s));
}

}  // namespace zt::ops
