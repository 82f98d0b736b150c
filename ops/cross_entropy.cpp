// ops::cross_entropy: validation, the path (fused on one rank; stats -> all_gather -> finish
// under a vocab-parallel group), the backend (CPU kernels, or CUDA when the logits live
// there), and the autograd node that hands back the gradient the forward pass already wrote.
#include "ops/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "framework/autograd/node.h"
#include "framework/device_backend.h"
#include "framework/distributed/process_group.h"
#include "ops/cross_entropy_kernels.h"
#include "ops/cross_entropy_steps.h"
#include "ops/device_dispatch.h"

namespace zt::ops {

Reduction parse_reduction(const std::string& s) {
  if (s == "mean") return Reduction::mean;
  if (s == "sum") return Reduction::sum;
  if (s == "none") return Reduction::none;
  ZT_FAIL("reduction: expected mean, sum or none, got '", s, "'");
}

namespace {

DType acc_dtype(DType logits) { return logits == DType::f64 ? DType::f64 : DType::f32; }

// The message for the first target outside [0, vocab) that is not ignore_index, or "".
std::string bad_target_message(const std::vector<int64_t>& targets, int64_t vocab, int64_t ignore_index) {
  for (size_t i = 0; i < targets.size(); ++i) {
    const int64_t y = targets[i];
    if (y != ignore_index && (y < 0 || y >= vocab))
      return detail::cat("cross_entropy: target ", y, " at row ", i, " is outside [0, ", vocab,
                         ") (ignore_index is ", ignore_index, ")");
  }
  return {};
}

void validate(const Variable& logits, const Tensor& targets, const CrossEntropyOptions& o) {
  ZT_CHECK(logits.defined() && targets.defined(), "cross_entropy: undefined logits or targets");
  const Tensor& x = logits.tensor();
  ZT_CHECK(x.dim() == 2, "cross_entropy: logits must be [N, V], got shape ", shape_str(x.shape()));
  ZT_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::bf16 || x.dtype() == DType::f64,
           "cross_entropy: logits must be f32, bf16 or f64, got ", dtype_name(x.dtype()));
  ZT_CHECK(x.size(1) >= 1, "cross_entropy: logits of shape ", shape_str(x.shape()), " have no vocabulary columns");
  ZT_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64,
           "cross_entropy: targets must be i32 or i64, got ", dtype_name(targets.dtype()));
  ZT_CHECK(targets.dim() == 1 && targets.size(0) == x.size(0), "cross_entropy: targets of shape ",
           shape_str(targets.shape()), " do not match logits of shape ", shape_str(x.shape()), " (expected [",
           x.size(0), "])");
  ZT_CHECK(targets.device() == x.device(), "cross_entropy: targets on ", targets.device().str(), " but logits on ",
           x.device().str());
  xent::validate_options(o, "cross_entropy");
}

bool on_cuda(const Tensor& t) { return t.device().is_cuda(); }

using xent::scale_grad;

// Row i of g [N, V] *= w[i] (reduction none with an upstream gradient vector).
void scale_rows(Tensor& g, const Tensor& w) {
  const std::vector<double> wv = w.to_vector<double>();
  if (std::all_of(wv.begin(), wv.end(), [](double x) { return x == 1.0; })) return;  // sum of rows: as is
  if (on_cuda(g)) {  // staged through the host: only reached when per-row losses are weighted
    Tensor h = g.to(Device::cpu());
    scale_rows(h, w);
    g.copy_(h);
    return;
  }
  const int64_t n = g.size(0), v = g.size(1);
  dispatch_float(g.dtype(), "cross_entropy backward", [&](auto tag) {
    using T = decltype(tag);
    T* p = g.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < v; ++j) p[i * v + j] = T(static_cast<double>(p[i * v + j]) * wv[i]);
  });
}

// The gradient was written by the forward kernel (of sum(row_loss) * grad_scale); backward
// only hands it back, scaled by the upstream gradient when that is not 1.
class CrossEntropyNode : public Node {
 public:
  // `grad` is saved with its version: a write into it between forward and backward (into the
  // logits, when the gradient was written in place) is an error rather than a wrong gradient.
  CrossEntropyNode(const Variable& logits, Tensor grad, Reduction reduction)
      : Node("cross_entropy", {logits}), grad_(std::move(grad)), reduction_(reduction) {}

  std::vector<Tensor> backward_seeded(double seed, const Tensor&) override {
    Tensor g = take_grad();
    scale_grad(g, seed);
    return {g};
  }

  std::vector<Tensor> backward(const Tensor& upstream) override {
    Tensor g = take_grad();
    if (reduction_ == Reduction::none) scale_rows(g, upstream);
    else scale_grad(g, upstream.item());
    return {g};
  }

  void release_saved() override { grad_.release(); }

 private:
  Tensor take_grad() {
    ZT_CHECK(!handed_back_ && grad_.defined(),
             "cross_entropy: backward reached this loss a second time; its gradient is computed in the forward "
             "pass and handed back once (call cross_entropy again for another backward)");
    handed_back_ = true;
    return grad_.get(*this);
  }

  SavedTensor grad_;
  Reduction reduction_;
  bool handed_back_ = false;
};

}  // namespace

namespace xent {

void scale_grad(Tensor& g, double factor) {
  if (factor == 1.0) return;
  if (on_cuda(g)) return g.scale_(factor);
  dispatch_float(g.dtype(), "cross_entropy backward", [&](auto tag) {
    using T = decltype(tag);
    T* p = g.data<T>();
    const int64_t n = g.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = T(static_cast<double>(p[i]) * factor);
  });
}

void validate_options(const CrossEntropyOptions& o, const char* op) {
  ZT_CHECK(std::isfinite(o.z_loss_weight) && o.z_loss_weight >= 0, op,
           ": z_loss_weight must be finite and >= 0, got ", o.z_loss_weight);
  ZT_CHECK(std::isfinite(o.label_smoothing) && o.label_smoothing >= 0 && o.label_smoothing < 1, op,
           ": label_smoothing must be in [0, 1), got ", o.label_smoothing);
  ZT_CHECK(o.reduction == Reduction::mean || o.reduction == Reduction::sum || o.reduction == Reduction::none, op,
           ": unknown reduction ", static_cast<int>(o.reduction));
  ZT_CHECK(std::isfinite(o.logit_softcap) && o.logit_softcap >= 0, op,
           ": logit_softcap must be finite and >= 0 (0: off), got ", o.logit_softcap);
  ZT_CHECK(std::isfinite(o.scale) && o.scale > 0, op, ": scale must be finite and > 0, got ", o.scale);
  ZT_CHECK(o.scale == 1.0 || o.reduction != Reduction::none, op,
           ": scale applies to a reduced loss (mean or sum), not to reduction none");
}

Params make_params(const CrossEntropyOptions& o, int64_t rows, int64_t vocab_local, int ranks, int rank,
                   const char* op) {
  Params p;
  p.rows = rows;
  p.vocab_local = vocab_local;
  p.vocab_global = p.vocab_local * ranks;
  p.vocab_offset = p.vocab_local * rank;
  ZT_CHECK(o.num_classes == -1 || (o.num_classes >= 1 && o.num_classes <= p.vocab_global), op,
           ": num_classes must be -1 (every column is a class) or in [1, ", p.vocab_global,
           "] (the global width: ", p.vocab_local, " columns x ", ranks, " rank", ranks == 1 ? "" : "s",
           "), got ", o.num_classes);
  p.num_classes = o.num_classes == -1 ? p.vocab_global : o.num_classes;
  p.label_smoothing = o.label_smoothing;
  p.z_loss_weight = o.z_loss_weight;
  p.ignore_index = o.ignore_index;
  p.logit_softcap = o.logit_softcap;
  return p;
}

Run start_run(const Tensor& targets, const Params& p, const CrossEntropyOptions& o, Device device, DType acc) {
  // On the host the check is cheap and happens before anything is written (the logits may
  // be the gradient buffer); on CUDA the kernels raise a deferred check's flag, reported at
  // the next host read after them (framework/cuda/deferred_check.h).
  if (device.is_cpu()) {
    const std::string msg = bad_target_message(targets.to_vector<int64_t>(), p.classes(), p.ignore_index);
    ZT_CHECK(msg.empty(), msg);
  }
  Run run;
  Outputs& out = run.out;
  out.row_loss = Tensor::empty({targets.numel()}, acc, device);
  out.lse = Tensor::empty({targets.numel()}, acc, device);
  out.z_row = Tensor::empty({targets.numel()}, acc, device);
  if (!device.is_cpu()) {
    run.bad_targets = device_backend(device).input_check();
    out.bad_target = run.bad_targets->device_flag();
  }
  out.grad_scale = Tensor::empty({}, acc, device);
  run.count = Tensor::empty({}, DType::i64, device);
  const bool mean = o.reduction == Reduction::mean;
  ZT_ON_DEVICE(targets, count_rows_cpu(targets, p.ignore_index, mean, run.count, out.grad_scale),
               count_rows_cuda(targets, p.ignore_index, mean, run.count, out.grad_scale));
  if (o.scale != 1.0) out.grad_scale.scale_(o.scale);  // one scalar, before the kernels read it
  return run;
}

void loss_kernels(const Tensor& x, const Tensor& targets, const Params& p, Outputs& out, ProcessGroup* group) {
  const int ranks = group ? group->size() : 1;
  if (ranks == 1) {
    ZT_ON_DEVICE(x, fused_cpu(x, targets, p, out), fused_cuda(x, targets, p, out));
    return;
  }
  // Vocab-parallel: 4 numbers per row and rank, one all_gather, then the global row terms
  // and this shard's gradient.
  const DType acc = out.row_loss.dtype();
  Tensor stats = Tensor::empty({p.rows, 4}, acc, x.device());
  ZT_ON_DEVICE(x, local_stats_cpu(x, targets, p, stats), local_stats_cuda(x, targets, p, stats));
  Tensor gathered = Tensor::empty({ranks, p.rows, 4}, acc, x.device());
  group->all_gather(stats, gathered);
  ZT_ON_DEVICE(x, finish_cpu(x, targets, gathered, p, out), finish_cuda(x, targets, gathered, p, out));
}

CrossEntropyResult finish_run(Run& run, const Tensor& targets, const Params& p, Reduction reduction) {
  const Outputs& out = run.out;
  const Device device = out.row_loss.device();
  const DType acc = out.row_loss.dtype();
  CrossEntropyResult result;
  result.count = run.count;
  Tensor loss = reduction == Reduction::none ? out.row_loss : Tensor::empty({}, acc, device);
  Tensor no_loss;
  result.ce_sum = Tensor::empty({}, acc, device);
  result.z_sum = Tensor::empty({}, acc, device);
  Tensor& loss_out = reduction == Reduction::none ? no_loss : loss;
  ZT_ON_DEVICE(out.row_loss,
               reduce_rows_cpu(out.row_loss, out.z_row, out.grad_scale, loss_out, result.ce_sum, result.z_sum),
               reduce_rows_cuda(out.row_loss, out.z_row, out.grad_scale, loss_out, result.ce_sum, result.z_sum));
  result.loss = Variable(loss);
  result.lse = out.lse;
  result.z_loss = out.z_row;
  result.target_check = {device, targets, p.classes(), p.ignore_index};
  if (run.bad_targets) run.bad_targets->commit([check = result.target_check] { check.fail(); });
  return result;
}

}  // namespace xent

void CrossEntropyResult::check() const { target_check.check(); }

void CrossEntropyResult::TargetCheck::check() const {
  if (!device.is_cpu()) device_backend(device).wait_input_checks();
}

void CrossEntropyResult::TargetCheck::fail() const {
  const std::string msg = bad_target_message(targets.to_vector<int64_t>(), vocab, ignore_index);
  ZT_FAIL(msg.empty() ? "cross_entropy: a target was outside the vocabulary" : msg);
}

CrossEntropyResult cross_entropy(const Variable& logits, const Tensor& targets_in, const CrossEntropyOptions& o) {
  validate(logits, targets_in, o);
  const Tensor x = logits.tensor().contiguous();  // kernels take rows; a strided input is copied
  const Tensor targets = targets_in.contiguous();
  const Device device = x.device();
  const DType acc = acc_dtype(x.dtype());
  const int ranks = o.group ? o.group->size() : 1;
  const int rank = o.group ? o.group->rank() : 0;

  const xent::Params p = xent::make_params(o, x.size(0), x.size(1), ranks, rank, "cross_entropy");
  const bool with_grad = needs_grad({logits});
  xent::Run run = xent::start_run(targets, p, o, device, acc);
  if (with_grad) run.out.grad = o.inplace_grad ? x : Tensor::empty(x.shape(), x.dtype(), device);
  xent::loss_kernels(x, targets, p, run.out, o.group.get());
  CrossEntropyResult result = xent::finish_run(run, targets, p, o.reduction);
  const Tensor loss = result.loss.tensor();
  const xent::Outputs& out = run.out;
  if (with_grad) {
    // The kernels wrote the gradient over the logits (inplace_grad): other nodes that saved
    // them, and cast()'s cached copies, see the new version and refuse the stale values.
    if (out.grad.shares_storage(x)) x.storage()->bump_version();
    result.loss = Variable::from_op(loss, std::make_shared<CrossEntropyNode>(logits, out.grad, o.reduction));
  } else {
    result.loss = Variable(loss);
  }
  return result;
}

}  // namespace zt::ops
