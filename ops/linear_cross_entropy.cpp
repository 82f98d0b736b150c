// ops::linear_cross_entropy: the LM head's product and the cross-entropy in chunks of rows,
// so the [N, V] logits never exist. Per chunk: the logits into one scratch buffer (the
// matmul kernels, not autograd), the cross-entropy kernels on it writing the gradient in
// place (ops/cross_entropy_steps.h: the same steps as ops::cross_entropy, vocab-parallel
// statistics combined per chunk), then the two gradient products. Math and memory traffic:
// docs/cross_entropy.md ("The fused head").
#include "ops/linear_cross_entropy.h"

#include <algorithm>

#include "framework/autograd/node.h"
#include "framework/distributed/process_group.h"
#include "ops/cross_entropy_steps.h"
#include "ops/device_dispatch.h"
#include "ops/matmul_kernels.h"
#include "ops/tensor_parallel.h"

namespace zt::ops {

namespace {

constexpr const char* kOp = "linear_cross_entropy";

void validate(const Variable& hidden, const Variable& weight, const Tensor& targets, const CrossEntropyOptions& o,
              int64_t chunk_rows) {
  ZT_CHECK(hidden.defined() && weight.defined() && targets.defined(), kOp,
           ": undefined hidden, weight or targets");
  const Tensor& h = hidden.tensor();
  const Tensor& w = weight.tensor();
  ZT_CHECK(h.dim() == 2, kOp, ": hidden must be [N, C], got shape ", shape_str(h.shape()));
  ZT_CHECK(w.dim() == 2, kOp, ": weight must be [V_local, C], got shape ", shape_str(w.shape()));
  ZT_CHECK(h.dtype() == DType::f32 || h.dtype() == DType::bf16 || h.dtype() == DType::f64, kOp,
           ": hidden must be f32, bf16 or f64, got ", dtype_name(h.dtype()));
  ZT_CHECK(w.dtype() == h.dtype(), kOp, ": weight is ", dtype_name(w.dtype()), " but hidden is ",
           dtype_name(h.dtype()));
  ZT_CHECK(w.size(1) == h.size(1), kOp, ": weight of shape ", shape_str(w.shape()), " does not match hidden of shape ",
           shape_str(h.shape()), " (expected [V_local, ", h.size(1), "])");
  ZT_CHECK(w.size(0) >= 1, kOp, ": weight of shape ", shape_str(w.shape()), " has no vocabulary rows");
  ZT_CHECK(w.device() == h.device(), kOp, ": weight on ", w.device().str(), " but hidden on ", h.device().str());
  ZT_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64, kOp,
           ": targets must be i32 or i64, got ", dtype_name(targets.dtype()));
  ZT_CHECK(targets.dim() == 1 && targets.size(0) == h.size(0), kOp, ": targets of shape ",
           shape_str(targets.shape()), " do not match hidden of shape ", shape_str(h.shape()), " (expected [",
           h.size(0), "])");
  ZT_CHECK(targets.device() == h.device(), kOp, ": targets on ", targets.device().str(), " but hidden on ",
           h.device().str());
  ZT_CHECK(chunk_rows >= 0, kOp, ": chunk_rows must be >= 0 (0: the default bound), got ", chunk_rows);
  xent::validate_options(o, kOp);
  ZT_CHECK(o.reduction != Reduction::none || !needs_grad({hidden, weight}), kOp,
           ": reduction none is forward only (the weight's gradient under per-row upstream weights is not a "
           "rescaling of the fused one); use mean or sum, or call it under NoGradGuard");
}

void gemm(const Tensor& a, const Tensor& b, Tensor& out, const GemmDims& d, bool accumulate = false) {
  ZT_ON_DEVICE(out, gemm_cpu(a, b, out, d, accumulate), gemm_cuda(a, b, out, d, accumulate));
}

// Hands back the gradients the forward pass computed (of the loss as returned), times the
// upstream scalar.
class LinearCrossEntropyNode : public Node {
 public:
  LinearCrossEntropyNode(const Variable& hidden, const Variable& weight, Tensor dhidden, Tensor dweight)
      : Node(kOp, {hidden, weight}), dhidden_(std::move(dhidden)), dweight_(std::move(dweight)) {}

  std::vector<Tensor> backward_seeded(double seed, const Tensor&) override { return take(seed); }
  std::vector<Tensor> backward(const Tensor& upstream) override { return take(upstream.item()); }
  void release_saved() override {
    dhidden_ = Tensor();
    dweight_ = Tensor();
  }

 private:
  std::vector<Tensor> take(double factor) {
    ZT_CHECK(!handed_back_, kOp,
             ": backward reached this loss a second time; its gradients are computed in the forward pass and "
             "handed back once (call linear_cross_entropy again for another backward)");
    handed_back_ = true;
    std::vector<Tensor> g = {std::move(dhidden_), std::move(dweight_)};
    for (Tensor& t : g)
      if (t.defined()) xent::scale_grad(t, factor);
    return g;
  }

  Tensor dhidden_, dweight_;
  bool handed_back_ = false;
};

}  // namespace

int64_t linear_cross_entropy_chunk_rows(int64_t n, int64_t vocab_local, DType dtype) {
  if (n <= 0) return 1;
  const int64_t bound_bytes = n * vocab_local * 2 / 8;
  const int64_t row_bytes = vocab_local * static_cast<int64_t>(dtype_size(dtype));
  return std::clamp<int64_t>(bound_bytes / row_bytes, 1, n);
}

CrossEntropyResult linear_cross_entropy(const Variable& hidden, const Variable& weight, const Tensor& targets_in,
                                        const CrossEntropyOptions& o, int64_t chunk_rows) {
  validate(hidden, weight, targets_in, o, chunk_rows);
  const Tensor h = hidden.tensor().contiguous();
  const Tensor w = weight.tensor().contiguous();
  const Tensor targets = targets_in.contiguous();
  const Device device = h.device();
  const DType dtype = h.dtype(), acc = dtype == DType::f64 ? DType::f64 : DType::f32;
  const int64_t n = h.size(0), c = h.size(1), v_local = w.size(0);
  const int ranks = o.group ? o.group->size() : 1;
  const int rank = o.group ? o.group->rank() : 0;
  const xent::Params p = xent::make_params(o, n, v_local, ranks, rank, kOp);
  const bool want_dh = needs_grad({hidden}), want_dw = needs_grad({weight});
  const bool with_grad = want_dh || want_dw;

  // The row count over ALL rows (grad_scale = scale / count for mean) is on the device before
  // the first chunk's gradient is written: count_rows runs over every target first.
  xent::Run run = xent::start_run(targets, p, o, device, acc);
  const int64_t rows_per_chunk = std::min(n, chunk_rows > 0 ? chunk_rows : linear_cross_entropy_chunk_rows(n, v_local, dtype));
  Tensor scratch = Tensor::empty({std::max<int64_t>(rows_per_chunk, 1), v_local}, dtype, device);
  Tensor dh = want_dh ? Tensor::empty({n, c}, dtype, device) : Tensor();
  // dweight accumulates over the chunks in f32 (f64 for f64), cast once at the end.
  Tensor dw_acc = want_dw ? Tensor::empty({v_local, c}, acc, device) : Tensor();
  if (want_dw && n == 0) dw_acc.fill_(0.0);

  for (int64_t r0 = 0; r0 < n; r0 += rows_per_chunk) {
    const int64_t r1 = std::min(n, r0 + rows_per_chunk), rows = r1 - r0;
    Tensor logits = scratch.slice(0, 0, rows);
    const Tensor h_chunk = h.slice(0, r0, r1);
    gemm(h_chunk, w, logits, {1, rows, v_local, c, false, true});  // logits = h w^T

    xent::Params pc = p;
    pc.rows = rows;
    xent::Outputs oc;
    oc.row_loss = run.out.row_loss.slice(0, r0, r1);
    oc.lse = run.out.lse.slice(0, r0, r1);
    oc.z_row = run.out.z_row.slice(0, r0, r1);
    oc.bad_target = run.out.bad_target;
    oc.grad_scale = run.out.grad_scale;
    if (with_grad) oc.grad = logits;  // in place: the scratch now holds d loss / d logits
    xent::loss_kernels(logits, targets.slice(0, r0, r1), pc, oc, o.group.get());

    if (want_dh) {
      Tensor dh_chunk = dh.slice(0, r0, r1);
      gemm(logits, w, dh_chunk, {1, rows, c, v_local, false, false});  // g w
    }
    if (want_dw) gemm(logits, h_chunk, dw_acc, {1, v_local, c, rows, true, false}, r0 > 0);  // += g^T h
  }
  // Each rank's dhidden covers its vocabulary shard; the gradient of hidden is their sum.
  if (want_dh && o.group && ranks > 1) all_reduce_sum(dh, *o.group);
  Tensor dw;
  if (want_dw) dw = dw_acc.dtype() == dtype ? dw_acc : dw_acc.to(dtype);

  CrossEntropyResult result = xent::finish_run(run, targets, p, o.reduction);
  if (with_grad)
    result.loss = Variable::from_op(result.loss.tensor(),
                                    std::make_shared<LinearCrossEntropyNode>(hidden, weight, dh, dw));
  return result;
}

}  // namespace zt::ops
