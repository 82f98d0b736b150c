#include "ops/attention.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>

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

std::array<std::atomic<int64_t>, 3> g_forward_calls{}, g_backward_calls{};
std::atomic<int> g_backend_override{-1};

void count_call(std::array<std::atomic<int64_t>, 3>& calls, AttentionBackend backend) {
  ++calls[static_cast<size_t>(backend)];
}

// choose_backend picks a fused backend only for CUDA tensors, so a CPU-only build never takes
// the fused path; were it to, this fails loudly rather than hand back an output or gradient
// that nothing wrote. (Typed as a gradient, to stand in ZT_ON_DEVICE's CPU place.)
[[noreturn]] Tensor fail_fused_without_cuda(AttentionBackend backend) {
  ZT_FAIL("causal_self_attention: the fused (", attention_backend_name(backend),
          ") attention path exists only in CUDA builds; a CPU-only build runs the unfused composite");
}

// The fused path of causal_self_attention (cuDNN's or our flash kernels). Saves the
// (contiguous) qkv, the merged output and the row log-sum-exp (both backends save the same
// statistics); d qkv is written by the backend in one [B, T, (H + 2 Hkv) D] buffer.
struct SelfAttentionNode : Node {
  SavedTensor saved_qkv, saved_out, saved_lse;
  int64_t H, Hkv;
  AttentionBackend backend;
  SelfAttentionNode(const Variable& input, Tensor x, Tensor o, Tensor l, int64_t n_head, int64_t n_kv_head,
                    AttentionBackend b)
      : Node("causal_self_attention", {input}),
        saved_qkv(std::move(x)),
        saved_out(std::move(o)),
        saved_lse(std::move(l)),
        H(n_head),
        Hkv(n_kv_head),
        backend(b) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor& qkv = saved_qkv.get(*this);
    Tensor dqkv = ZT_ON_DEVICE(
        qkv, fail_fused_without_cuda(backend),
        fused_attention_backward_cuda(backend, qkv, H, Hkv, saved_out.get(*this), saved_lse.get(*this), grad));
    count_call(g_backward_calls, backend);
    return {dqkv};
  }
  void release_saved() override {
    for (SavedTensor* t : {&saved_qkv, &saved_out, &saved_lse}) t->release();
  }
};

// The backend that runs causal_self_attention on the contiguous projection x: the first
// choice (attention_backend()) if it takes the call, else the next one down the list.
AttentionBackend choose_backend(const Tensor& x, int64_t H, int64_t Hkv, int64_t D) {
  if (!x.device().is_cuda() || x.numel() == 0) return AttentionBackend::unfused;
  return ZT_ON_DEVICE(x, AttentionBackend::unfused, fused_attention_backend_cuda(x, H, Hkv, D, attention_backend()));
}

}  // namespace

Variable causal_self_attention(const Variable& qkv, int64_t n_head, int64_t n_kv_head) {
  const char* op = "causal_self_attention";
  check_defined(op, "qkv", qkv);
  check_floating(op, "qkv", qkv.tensor());
  const Shape& s = qkv.shape();
  ZT_CHECK(s.size() == 3, op, ": qkv ", shape_str(s), ": expected [B, T, (n_head + 2 n_kv_head) D]");
  ZT_CHECK(n_head >= 1 && n_kv_head >= 1 && n_head % n_kv_head == 0, op, ": n_kv_head ", n_kv_head,
           " does not divide n_head ", n_head);
  const int64_t H = n_head, Hkv = n_kv_head, width = H + 2 * Hkv;
  ZT_CHECK(s[2] % width == 0, op, ": qkv ", shape_str(s), ": last dimension ", s[2],
           " is not a multiple of n_head + 2 n_kv_head = ", width, " (n_head ", H, ", n_kv_head ", Hkv, ")");
  const int64_t B = s[0], T = s[1], D = s[2] / width, C = H * D;
  const Tensor x = qkv.tensor().contiguous();
  const AttentionBackend backend = choose_backend(x, H, Hkv, D);
  count_call(g_forward_calls, backend);
  if (backend == AttentionBackend::unfused) {
    std::vector<Variable> parts = split_last(qkv, {C, Hkv * D, Hkv * D});
    auto heads = [&](const Variable& v, int64_t n) { return transpose(reshape(v, {B, T, n, D}), 1, 2); };
    Variable y = causal_attention(heads(parts[0], H), heads(parts[1], Hkv), heads(parts[2], Hkv));  // [B, H, T, D]
    return reshape(transpose(y, 1, 2), {B, T, C});
  }
  Tensor out = Tensor::empty({B, T, C}, x.dtype(), x.device());
  Tensor lse = Tensor::empty({B, H, T}, DType::f32, x.device());
  ZT_ON_DEVICE(x, static_cast<void>(fail_fused_without_cuda(backend)),
               fused_attention_forward_cuda(backend, x, H, Hkv, out, lse));
  if (!needs_grad({qkv})) return Variable(out);
  return Variable::from_op(out, std::make_shared<SelfAttentionNode>(qkv, x, out, lse, H, Hkv, backend));
}

Variable causal_self_attention(const Variable& qkv, int64_t n_head) { return causal_self_attention(qkv, n_head, n_head); }

const char* attention_backend_name(AttentionBackend backend) {
  switch (backend) {
    case AttentionBackend::cudnn: return "cudnn";
    case AttentionBackend::flash: return "flash";
    case AttentionBackend::unfused: return "unfused";
  }
  return "?";
}

AttentionBackend parse_attention_backend(const char* zt_attention, const char* zt_flash_attention) {
  if (zt_attention && zt_attention[0] != '\0') {
    const std::string v = zt_attention;
    for (AttentionBackend b : {AttentionBackend::cudnn, AttentionBackend::flash, AttentionBackend::unfused})
      if (v == attention_backend_name(b)) return b;
    ZT_FAIL("ZT_ATTENTION=", v, ": expected cudnn, flash or unfused");
  }
  if (zt_flash_attention && zt_flash_attention[0] == '0') return AttentionBackend::unfused;
  // cuDNN's fused attention where it takes the shape (1.8x our flash kernels' forward+backward
  // at the model's shape, docs/benchmarks.md), else our flash kernels, else the composite.
  return AttentionBackend::cudnn;
}

AttentionBackend attention_backend() {
  const int chosen = g_backend_override.load();
  if (chosen >= 0) return static_cast<AttentionBackend>(chosen);
  static const AttentionBackend from_env =
      parse_attention_backend(std::getenv("ZT_ATTENTION"), std::getenv("ZT_FLASH_ATTENTION"));
  return from_env;
}

void set_attention_backend(AttentionBackend backend) { g_backend_override.store(static_cast<int>(backend)); }

AttentionCalls attention_calls(AttentionBackend backend) {
  const size_t i = static_cast<size_t>(backend);
  return {g_forward_calls[i].load(), g_backward_calls[i].load()};
}

bool flash_attention_enabled() { return attention_backend() != AttentionBackend::unfused; }

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
  const Shape &qs = q.shape(), &ks = k.shape();
  ZT_CHECK(qs.size() == 4 && ks.size() == 4 && k.shape() == v.shape() && ks[0] == qs[0] && ks[2] == qs[2] &&
               ks[3] == qs[3] && (ks[1] == 0 ? qs[1] == 0 : qs[1] % ks[1] == 0),
           op, ": q ", shape_str(qs), ", k ", shape_str(ks), ", v ", shape_str(v.shape()),
           ": expected q [B, H, T, D] and k, v [B, Hkv, T, D] with Hkv dividing H");
  Tensor lse;
  Tensor out = ZT_ON_DEVICE(q.tensor(), attention_forward_cpu(q.tensor(), k.tensor(), v.tensor(), lse),
                            attention_forward_cuda(q.tensor(), k.tensor(), v.tensor(), lse));
  if (!needs_grad({q, k, v})) return Variable(out);
  return Variable::from_op(out, std::make_shared<AttentionNode>(q, k, v, out, lse));
}

}  // namespace zt::ops
