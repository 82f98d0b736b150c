#include "ops/attention.h"

#include "framework/autograd/node.h"
#include "ops/attention_kernels.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

struct AttentionNode : Node {
  Tensor q, k, v, out, lse;
  AttentionNode(const Variable& vq, const Variable& vk, const Variable& vv, Tensor o, Tensor l)
      : Node("causal_attention", {vq, vk, vv}),
        q(vq.tensor()),
        k(vk.tensor()),
        v(vv.tensor()),
        out(std::move(o)),
        lse(std::move(l)) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    std::vector<Tensor> grads(3);
    const Tensor g = grad_as(grad, q.dtype());
    Tensor* dq = needs_input_grad(0) ? &grads[0] : nullptr;
    Tensor* dk = needs_input_grad(1) ? &grads[1] : nullptr;
    Tensor* dv = needs_input_grad(2) ? &grads[2] : nullptr;
    ZT_ON_DEVICE(g, attention_backward_cpu(g, q, k, v, out, lse, dq, dk, dv),
                 attention_backward_cuda(g, q, k, v, out, lse, dq, dk, dv));
    return grads;
  }
  void release_saved() override { q = k = v = out = lse = Tensor(); }
};

}  // namespace

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
