#pragma once
// Fused LM head + cross-entropy: the loss of logits = hidden weight^T without ever holding
// the [N, V] logits. Math, memory traffic and conventions: docs/cross_entropy.md ("The fused
// head").
//
// The rows go through in chunks: per chunk, logits_chunk = hidden[chunk] weight^T into one
// bounded scratch buffer, the cross-entropy kernels on it (the same ones as
// ops::cross_entropy, gradient written in place), then dhidden[chunk] = g weight and
// dweight += g^T hidden[chunk]. The gradients are thus computed in the forward pass and
// handed back, times the upstream scalar, by backward.
#include <cstdint>

#include "ops/cross_entropy.h"

namespace zt::ops {

// hidden [N, C] and weight [V_local, C]: one dtype (f32, bf16 or f64), one device; targets
// [N] i32/i64 (global ids). options as for cross_entropy (label_smoothing, z_loss_weight,
// ignore_index, reduction, num_classes, scale, logit_softcap; group: the vocab-parallel
// group, rank r holding weight rows [r V_local, (r+1) V_local) and the same hidden and
// targets as every other rank); inplace_grad has no meaning here (the logits never exist).
// The result is cross_entropy's on hidden weight^T: loss differentiable w.r.t. hidden and
// weight, lse, z_loss, ce_sum, z_sum, count.
//
// chunk_rows: rows per chunk; 0 picks linear_cross_entropy_chunk_rows(). Memory beyond the
// outputs: the scratch [chunk_rows, V_local] of the hidden dtype, dhidden [N, C], dweight
// [V_local, C] (plus an f32 accumulator of that size for bf16).
//
// Reduction none is forward only: the weight's gradient under per-row upstream weights is
// not a rescaling of the fused one, so with none and an input that needs a gradient the op
// throws (call it under NoGradGuard, or use mean/sum). No host synchronisation on CUDA.
CrossEntropyResult linear_cross_entropy(const Variable& hidden, const Variable& weight, const Tensor& targets,
                                        const CrossEntropyOptions& options = {}, int64_t chunk_rows = 0);

// The default chunk: the most rows whose logits scratch [rows, V_local] of `dtype` takes at
// most 1/8 of the bytes of N x V_local bf16 logits (N V_local / 4 bytes), at least 1 row and
// at most N.
int64_t linear_cross_entropy_chunk_rows(int64_t n, int64_t vocab_local, DType dtype);

}  // namespace zt::ops
