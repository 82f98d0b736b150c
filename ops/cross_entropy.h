#pragma once
// The op ztrain exists for: fused, vocab-parallel cross-entropy with z-loss and label
// smoothing. Math and conventions: see docs/cross_entropy.md.
//
// Per non-ignored row with logits x (global vocab V), target y, smoothing e, weight z:
// (x the logits after the optional soft-cap, c = cap tanh(x / cap))
//   lse = log sum_j exp(x_j)
//   row = lse - (1-e) x_y - (e/V) sum_j x_j + z lse^2
//   d row / d x_j = p_j (1 + 2 z lse) - (1-e)[j==y] - e/V
#include <cstdint>
#include <memory>
#include <string>

#include "framework/autograd/variable.h"

namespace zt {
class ProcessGroup;
}

namespace zt::ops {

enum class Reduction { mean, sum, none };
Reduction parse_reduction(const std::string& s);  // "mean" | "sum" | "none"

struct CrossEntropyOptions {
  double label_smoothing = 0.0;  // e in [0, 1)
  double z_loss_weight = 0.0;    // z >= 0, finite; a runtime value, may change every call
  int64_t ignore_index = -100;   // rows whose target equals it: loss 0, gradient 0, not counted
  Reduction reduction = Reduction::mean;  // mean divides by the number of non-ignored rows
  // Vocab-parallel group: rank r holds logit columns [r V_local, (r+1) V_local). Null or a
  // single rank: plain cross-entropy.
  std::shared_ptr<ProcessGroup> group;
  // Write the gradient into the logits buffer (no extra N x V memory). The logits tensor
  // holds the gradient afterwards; don't read it as logits again.
  bool inplace_grad = true;
  // The global number of real classes V; -1: every column is a class. Global columns at
  // or past it are padding (a vocabulary padded to a multiple of 64 for aligned matmuls,
  // e.g. GPT-2's 50257 -> 50304): they are never read, take no part in the max, lse or the
  // smoothing sum (which divides by V = num_classes), and their gradient is exactly 0
  // (written in place too). Under a vocab-parallel group the padding may cover part of the
  // last rank's shard or whole shards. Must be in [1, global width]; targets in [0, V).
  int64_t num_classes = -1;
  // Multiplies the reduced loss (mean or sum) and so its fused gradient, inside the kernel's
  // gradient scale: no extra pass over the [N, V] gradient. The trainer's loss is the sum
  // over a micro-batch scaled by 1 / (target tokens of the whole global batch). Finite, > 0;
  // 1 with reduction none.
  double scale = 1.0;
  // Logit soft-capping (Gemma 2 uses 30): every logit x enters the loss as
  // c = cap tanh(x / cap) (max, lse, target term, smoothing sum and z-loss all of c) and the
  // gradient is chain-ruled, d/dx = d/dc (1 - tanh^2(x / cap)). 0: off. Finite, >= 0. A
  // logit of -inf stays -inf (masked). Elementwise, so vocab-parallel statistics are unchanged.
  double logit_softcap = 0.0;
};

// Everything but `loss` is for logging and carries no gradient. All are tensors on the
// logits' device, so nothing here forces a host synchronisation; read them when logging.
struct CrossEntropyResult {
  Variable loss;  // scalar (mean/sum) or [N] (none); differentiable w.r.t. logits
  Tensor lse;     // [N] f32 (f64 for f64 logits): per-row log-sum-exp over the global vocab; 0 on ignored rows
  Tensor z_loss;  // [N] like lse: per-row z * lse^2; 0 on ignored rows
  Tensor ce_sum;  // [] like lse: sum over non-ignored rows of the cross-entropy part (no z-loss)
  Tensor z_sum;   // [] like lse: sum over non-ignored rows of z * lse^2
  Tensor count;   // [] i64: number of non-ignored rows

  // Out-of-range targets. On CPU cross_entropy() checks them before any work and throws
  // zt::Error naming the row and the value; check() then never throws. On CUDA the kernels
  // raise the flag of a deferred device-side check instead of forcing a host sync
  // (framework/cuda/deferred_check.h): the same message is thrown at the first host read
  // after the kernels have run (item(), to_vector(), to(cpu) of any tensor), or by check(),
  // which waits for them (a sync). Each raised check is reported once.
  void check() const;
  struct TargetCheck {
    Device device;   // the logits' device
    Tensor targets;  // kept to name the first bad row
    int64_t vocab = 0;
    int64_t ignore_index = -100;
    // What CrossEntropyResult::check() does; may outlive the result. On CUDA it waits for
    // the calling thread's pending device-side checks (this op's and earlier ones', e.g. the
    // embedding's ids) and throws the first raised one's error.
    void check() const;
    // The error of a raised check: names the first target outside [0, vocab).
    [[noreturn]] void fail() const;
  } target_check;
};

// logits [N, V_local] f32/bf16/f64 on CPU or CUDA (V_local * ranks = the global width,
// >= num_classes); targets [N] i32/i64 (global ids).
CrossEntropyResult cross_entropy(const Variable& logits, const Tensor& targets,
                                 const CrossEntropyOptions& options = {});

}  // namespace zt::ops
