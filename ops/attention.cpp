#include "ops/attention.h"

#include <cstdint>

#include "framework/autograd/node.h"
#include "ops/attention_kernels.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"
#include "ops/shape_ops.h"

namespace zt::ops {

namespace {

struct AttentionNode : Node {
  SavedTensor q, k, v, out, lse;
  AttentionNode(const Variable& vq, const Variable& vk, const Variable& vv, Tensor o, Tensor l)
      : Node("causal_attention", {vq, vk, vv}),
        q(vq.tensor()),
        k(vk.tensor()),
        v(vv.tensor()),
        out(std::move(o)),
        lse(std::move(l)) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    std::vector<Tensor> grads(3);
    const Tensor &sq = q.get(*this), &sk = k.get(*this), &sv = v.get(*this);
    const Tensor &so = out.get(*this), &sl = lse.get(*this);
    const Tensor g = grad_as(grad, sq.dtype());
    Tensor* dq = needs_input_grad(0) ? &grads[0] : nullptr;
    Tensor* dk = needs_input_grad(1) ? &grads[1] : nullptr;
    Tensor* dv = needs_input_grad(2) ? &grads[2] : nullptr;
    ZT_ON_DEVICE(g, attention_backward_cpu(g, sq, sk, sv, so, sl, dq, dk, dv),
                 attention_backward_cuda(g, sq, sk, sv, so, sl, dq, dk, dv));
    return grads;
  }
  void release_saved() override {
    for (SavedTensor* t : {&q, &k, &v, &out, &lse}) t->release();
  }
};

// The heads of a contiguous [B, T, 3C] projection as three [B, H, T, D] views.
FlashArgs flash_args(const Tensor& qkv, int64_t H) {
  FlashArgs a;
  const int64_t C = qkv.size(2) / 3;
  const size_t part = static_cast<size_t>(C) * dtype_size(qkv.dtype());
  a.q = qkv.raw_data();
  a.k = static_cast<const char*>(qkv.raw_data()) + part;
  a.v = static_cast<const char*>(qkv.raw_data()) + 2 * part;
  a.B = qkv.size(0);
  a.T = qkv.size(1);
  a.H = H;
  a.D = C / H;
  a.in = {a.T * 3 * C, a.D, 3 * C};
  return a;
}

// The heads of a [B, T, C] activation (merged heads) as a [B, H, T, D] view.
AttentionLayout merged_layout(const Tensor& qkv, int64_t H) {
  const int64_t T = qkv.size(1), C = qkv.size(2) / 3;
  return {T * C, C / H, C};
}

// The fused path of causal_self_attention. Saves the (contiguous) qkv, the merged output
// and the row log-sum-exp; d qkv is written by the kernels in one [B, T, 3C] buffer.
struct SelfAttentionNode : Node {
  SavedTensor saved_qkv, saved_out, saved_lse;
  int64_t H;
  SelfAttentionNode(const Variable& input, Tensor x, Tensor o, Tensor l, int64_t n_head)
      : Node("causal_self_attention", {input}), saved_qkv(std::move(x)), saved_out(std::move(o)),
        saved_lse(std::move(l)), H(n_head) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor& qkv = saved_qkv.get(*this);
    Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
#ifdef ZTRAIN_WITH_CUDA
    const Tensor &out = saved_out.get(*this), &lse = saved_lse.get(*this);
    const Tensor g = grad_as(grad, qkv.dtype()).contiguous();
    char* d = static_cast<char*>(dqkv.raw_data());
    const size_t part = static_cast<size_t>(qkv.size(2) / 3) * dtype_size(qkv.dtype());
    flash_attention_backward_cuda(flash_args(qkv, H), out.raw_data(), g.raw_data(), merged_layout(qkv, H),
                                  static_cast<const float*>(lse.raw_data()), d, d + part, d + 2 * part,
                                  flash_args(qkv, H).in, qkv.device().index);
#else
    (void)grad;
#endif
    return {dqkv};
  }
  void release_saved() override {
    for (SavedTensor* t : {&saved_qkv, &saved_out, &saved_lse}) t->release();
  }
};

// Whether the fused CUDA kernels take this call: bf16 on a GPU, D = 32 or 64, 16-byte
// aligned rows. ZT_FLASH_ATTENTION=0 turns them off (for A/B timing).
bool use_flash(const Tensor& x, int64_t D) {
#ifdef ZTRAIN_WITH_CUDA
  return flash_attention_enabled() && x.device().is_cuda() && flash_attention_supported(x.dtype(), D) &&
         reinterpret_cast<uintptr_t>(x.raw_data()) % 16 == 0;
#else
  (void)x;
  (void)D;
  return false;
#endif
}

}  // namespace

Variable causal_self_attention(const Variable& qkv, int64_t n_head) {
  const char* op = "causal_self_attention";
  check_defined(op, "qkv", qkv);
  check_floating(op, "qkv", qkv.tensor());
  const Shape& s = qkv.shape();
  ZT_CHECK(s.size() == 3 && s[2] % 3 == 0, op, ": qkv ", shape_str(s), ": expected [B, T, 3C]");
  ZT_CHECK(n_head >= 1 && (s[2] / 3) % n_head == 0, op, ": n_head ", n_head, " does not divide C = ", s[2] / 3);
  const int64_t B = s[0], T = s[1], C = s[2] / 3, H = n_head, D = C / n_head;
  const Tensor x = qkv.tensor().contiguous();
  if (!use_flash(x, D) || B * T * C == 0) {
    std::vector<Variable> parts = split_last(qkv, 3);
    auto heads = [&](const Variable& v) { return transpose(reshape(v, {B, T, H, D}), 1, 2); };
    Variable y = causal_attention(heads(parts[0]), heads(parts[1]), heads(parts[2]));  // [B, H, T, D]
    return reshape(transpose(y, 1, 2), {B, T, C});
  }
  Tensor out = Tensor::empty({B, T, C}, x.dtype(), x.device());
  Tensor lse = Tensor::empty({B, H, T}, DType::f32, x.device());
#ifdef ZTRAIN_WITH_CUDA
  flash_attention_forward_cuda(flash_args(x, H), out.raw_data(), merged_layout(x, H),
                               static_cast<float*>(lse.raw_data()), x.device().index);
#endif
  if (!needs_grad({qkv})) return Variable(out);
  return Variable::from_op(out, std::make_shared<SelfAttentionNode>(qkv, x, out, lse, H));
}

Variable causal_attention(const Variable& q, const Variable& k, const Variable& v) {
  const char* op = "causal_attention";
  check_defined(op, "q", q);
  check_defined(op, "k", k);
  check_defined(op, "v", v);
  check_floating(op, "q", q.tensor());
  check_same_dtype(op, "q", q.tensor(), "k", k.tensor());
  check_same_dtype(op, "q", q.tensor(), "v", v.tensor());
  check_same_device(op, "q", q.tensor(), "k", k.tensor());
  check_same_device(op, "q", q.tensor(), "v", v.tensor());
  ZT_CHECK(q.tensor().dim() == 4 && q.shape() == k.shape() && q.shape() == v.shape(), op, ": q ",
           shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()),
           ": expected three equal [B, H, T, D] shapes");
  Tensor lse;
  Tensor out = ZT_ON_DEVICE(q.tensor(), attention_forward_cpu(q.tensor(), k.tensor(), v.tensor(), lse),
                            attention_forward_cuda(q.tensor(), k.tensor(), v.tensor(), lse));
  if (!needs_grad({q, k, v})) return Variable(out);
  return Variable::from_op(out, std::make_shared<AttentionNode>(q, k, v, out, lse));
}

}  // namespace zt::ops
