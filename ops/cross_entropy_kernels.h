#pragma once
// Backend kernels behind ops::cross_entropy (internal to ops/). cross_entropy.cpp validates,
// picks the backend (CPU: cross_entropy_cpu.cpp, CUDA: cross_entropy_cuda.cu) and the path:
//
//   one rank:  fused()                      one read of the logits, one gradient write
//   P ranks:   local_stats() -> all_gather of [N, 4] stats -> finish()
//
// Stats per row and rank (f32 for f32/bf16 logits, f64 for f64): {m_r = max of local x,
// d_r = sum of exp(x - m_r), x_y if the target is in this shard else 0, s_r = sum of local x}.
// finish() combines the P gathered rows: m = max m_r, d = sum d_r exp(m_r - m), lse = m + log d,
// x_y = sum of the x_y column (one owner), S = sum s_r; then writes loss rows and the gradient.
// "Local x" is the shard's columns below num_classes: a shard that is all padding sends
// {-inf, 0, 0, 0}, which the combination above leaves out.
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "framework/tensor.h"

#if defined(__CUDACC__)
#define ZT_XENT_HD __host__ __device__
#else
#define ZT_XENT_HD
#endif

namespace zt::ops::xent {

struct Params {
  int64_t rows = 0;
  int64_t vocab_local = 0;   // columns in this shard (the row stride of logits and gradient)
  int64_t vocab_global = 0;  // columns of all shards together (the padded width)
  int64_t vocab_offset = 0;  // global id of this shard's first column
  // Real classes: global columns >= num_classes are padding (no part in max, lse or the
  // smoothing sum; gradient exactly 0). -1: every column is a class.
  int64_t num_classes = -1;
  double label_smoothing = 0;
  double z_loss_weight = 0;
  int64_t ignore_index = -100;
  // Logit soft-capping: every logit x enters the loss as cap tanh(x / cap) (softcap() below);
  // 0: off.
  double logit_softcap = 0;

  // V of the math: the smoothing term divides by it, targets must lie in [0, V).
  int64_t classes() const { return num_classes < 0 ? vocab_global : num_classes; }
  // This shard's leading columns that are real classes (the rest of its row is padding).
  int64_t valid_local() const {
    const int64_t v = classes() - vocab_offset;
    return v < 0 ? 0 : v > vocab_local ? vocab_local : v;
  }
};

// Logit soft-capping, the one definition both backends use (Gemma 2: cap 30). Returns
// c = cap tanh(x / cap) and sets *dc_dx = 1 - tanh^2(x / cap), with u = x / cap and
// a = exp(-2|u|): tanh|u| = (1 - a) / (1 + a) and 1 - tanh^2 u = 4a / (1 + a)^2. 1 - a is
// expm1(-2|u|) (no cancellation for small |u|) and a itself is 1 + that while a >= 1/2, else
// a second exp (1 + expm1 would lose a's digits once a is small); so neither c nor dc/dx
// loses precision (1 - t^2 from a rounded t would be 0 or noise once t rounds to 1). A logit of -inf stays -inf (a masked column stays
// masked, dc/dx 0); +inf gives cap (dc/dx 0); NaN stays NaN. Everything the loss uses (max,
// lse, x_y, the smoothing sum, z-loss) is of c, and the gradient is d/dc * dc/dx.
template <class A>
ZT_XENT_HD inline A softcap(A x, A cap, A* dc_dx) {
  if (x == -std::numeric_limits<A>::infinity()) {
    *dc_dx = A(0);
    return x;
  }
  const A u = x / cap;
  A em1, a;  // a - 1 in [-1, 0], and a
  if constexpr (std::is_same_v<A, float>) {
    em1 = expm1f(-2.0f * fabsf(u));
    a = em1 < -0.5f ? expf(-2.0f * fabsf(u)) : 1.0f + em1;
  } else {
    em1 = expm1(-2.0 * fabs(u));
    a = em1 < -0.5 ? exp(-2.0 * fabs(u)) : 1.0 + em1;
  }
  const A one_plus_a = A(2) + em1;
  *dc_dx = A(4) * a / (one_plus_a * one_plus_a);
  const A t = -em1 / one_plus_a;  // tanh|u|
  return u < A(0) ? -cap * t : u > A(0) ? cap * t : u;  // u: 0 or NaN kept as they are
}

// Outputs, preallocated by the caller on the logits' device:
//   row_loss [N]  ce + z lse^2 per row (0 on ignored rows)
//   lse [N]       (0 on ignored rows)
//   z_row [N]     z lse^2 per row (0 on ignored rows)
//   grad          [N, V_local] like logits, may alias logits (in place), or undefined for
//                 forward only. The gradient is of sum_rows(row_loss) * grad_scale where
//                 grad_scale is the scalar tensor below (device-resident: 1/count for mean,
//                 computed on the device without a host sync; 1 for sum and none).
//                 Columns at or past valid_local() are padding: their gradient is 0.
//   bad_target    an int the kernels set to 1 when a non-ignored target lies outside
//                 [0, V) (the loss rows of such targets are NaN). The CUDA kernels need
//                 one the device can write: cross_entropy() passes a deferred check's flag
//                 (framework/cuda/deferred_check.h), which reports the error at the next
//                 host read. Null: not reported (CPU only; the CPU op checks the targets
//                 before the kernels run).
struct Outputs {
  Tensor row_loss, lse, z_row, grad;
  int* bad_target = nullptr;
  Tensor grad_scale;  // [] f32 (f64 for f64), read by the kernels
};

// The element types of one call: the one dtype switch of fused, local_stats and finish on both
// backends. Calls f(T{}, Tgt{}) with T the logits' type (float, bf16 or double; another dtype
// fails naming `what`) and Tgt the targets' (int32_t for i32, else int64_t: the callers have
// checked for i32 or i64). dispatch_targets alone is the Tgt half.
template <class F>
void dispatch_targets(DType targets, F&& f) {
  if (targets == DType::i32) f(int32_t{});
  else f(int64_t{});
}
template <class F>
void dispatch_types(const Tensor& logits, const Tensor& targets, const char* what, F&& f) {
  dispatch_float(logits.dtype(), what,
                 [&](auto ltag) { dispatch_targets(targets.dtype(), [&](auto ttag) { f(ltag, ttag); }); });
}

// count [] i64 := number of rows whose target != ignore_index; grad_scale := 1/count (0 when
// count == 0) if mean else 1.
void count_rows_cpu(const Tensor& targets, int64_t ignore_index, bool mean, Tensor& count, Tensor& grad_scale);
void fused_cpu(const Tensor& logits, const Tensor& targets, const Params& p, Outputs& out);
void local_stats_cpu(const Tensor& logits, const Tensor& targets, const Params& p, Tensor& stats);
void finish_cpu(const Tensor& logits, const Tensor& targets, const Tensor& gathered_stats /*[P, N, 4]*/,
                const Params& p, Outputs& out);

// Extension (added with the CPU kernels; the functions above are unchanged): the scalars of
// the result, on the logits' device without a host sync. All like lse's dtype, shape [].
//   loss   := grad_scale * sum of row_loss   (the mean/sum loss; undefined: skipped)
//   ce_sum := sum of (row_loss - z_row)      (the cross-entropy part)
//   z_sum  := sum of z_row
// Ignored rows hold 0 in row_loss and z_row, so plain sums over all N rows are right.
void reduce_rows_cpu(const Tensor& row_loss, const Tensor& z_row, const Tensor& grad_scale, Tensor& loss,
                     Tensor& ce_sum, Tensor& z_sum);

#ifdef ZTRAIN_WITH_CUDA
void count_rows_cuda(const Tensor& targets, int64_t ignore_index, bool mean, Tensor& count, Tensor& grad_scale);
void fused_cuda(const Tensor& logits, const Tensor& targets, const Params& p, Outputs& out);
void local_stats_cuda(const Tensor& logits, const Tensor& targets, const Params& p, Tensor& stats);
void finish_cuda(const Tensor& logits, const Tensor& targets, const Tensor& gathered_stats, const Params& p,
                 Outputs& out);
void reduce_rows_cuda(const Tensor& row_loss, const Tensor& z_row, const Tensor& grad_scale, Tensor& loss,
                      Tensor& ce_sum, Tensor& z_sum);
#endif

}  // namespace zt::ops::xent
