#pragma once
// The steps of ops::cross_entropy around its kernels (internal to ops/), shared by
// cross_entropy() and linear_cross_entropy() (ops/linear_cross_entropy.h), which runs them
// per chunk of rows. Implemented in ops/cross_entropy.cpp. Host-only (not for .cu files).
// `op` names the calling op in error messages.
#include <memory>

#include "framework/device_backend.h"
#include "ops/cross_entropy.h"
#include "ops/cross_entropy_kernels.h"

namespace zt::ops::xent {

// The option checks (z_loss_weight, label_smoothing, reduction, logit_softcap, scale).
void validate_options(const CrossEntropyOptions& o, const char* op);
// Params of `rows` rows of a shard of vocab_local columns, rank `rank` of `ranks`; checks num_classes.
Params make_params(const CrossEntropyOptions& o, int64_t rows, int64_t vocab_local, int ranks, int rank,
                   const char* op);
// One call's outputs before the kernels: row outputs for all targets.numel() rows, count and
// grad_scale (1/count for mean, times options.scale) computed on the device, and on CUDA the
// deferred target check whose flag out.bad_target is. On CPU a bad target throws here, before
// anything is written. out.grad is left for the caller.
struct Run {
  Outputs out;
  Tensor count;
  std::unique_ptr<DeviceBackend::InputCheck> bad_targets;
};
Run start_run(const Tensor& targets, const Params& p, const CrossEntropyOptions& o, Device device, DType acc);
// The loss kernels on x [p.rows, vocab_local]: fused() on one rank; local_stats(), all_gather
// over `group`, finish() under a vocab-parallel group of several ranks.
void loss_kernels(const Tensor& x, const Tensor& targets, const Params& p, Outputs& out, ProcessGroup* group);
// The result after the kernels: loss (without autograd; an [N] view of row_loss for none),
// logging sums, lse, z_loss, count, and the target check committed.
CrossEntropyResult finish_run(Run& run, const Tensor& targets, const Params& p, Reduction reduction);

// g *= factor in place (a fused gradient times a host-known upstream scalar); nothing when 1.
// CPU with threads; CUDA through Tensor::scale_.
void scale_grad(Tensor& g, double factor);

}  // namespace zt::ops::xent
