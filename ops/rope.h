#pragma once
// QK-norm and rotary position embedding on a fused qkv projection (Llama 3, OLMo 2, Qwen 3).
//
// qkv [B, T, (H + 2*Hkv) * D]: H query heads, then Hkv key heads, then Hkv value heads, each
// D wide along the last dim (grouped-query attention layout; Hkv == H is the usual MHA qkv).
// Returns a tensor of the same shape where, per token and per q and k head:
//   1. if q_gain / k_gain are defined ([D] each): RMSNorm over that head's D values with
//      that gain (QK-norm, per head, eps `eps`); q heads use q_gain, k heads k_gain.
//   2. if rope_theta > 0: RoPE "rotate half" (Llama / GPT-NeoX convention): for i in [0, D/2),
//      the pair (x_i, x_{i+D/2}) at position t (t = the token's index in [0, T)) is rotated by
//      angle t * rope_theta^(-2i/D):  x_i' = x_i cos - x_{i+D/2} sin,  x_{i+D/2}' = x_{i+D/2} cos + x_i sin.
//   v heads are copied unchanged.
// Gradients flow to qkv and both gains. f32, bf16 (computed in f32), f64; angles in f32 for
// f32 and bf16 (t * inv_freq rounded to f32, inv_freq = rope_theta^(-2i/D) from f64), in f64 for f64.
// Errors: qkv not 3-D, n_head or n_kv_head < 1, n_kv_head not dividing n_head, a last dim that
// is not (n_head + 2 n_kv_head) whole heads, an odd head dim with RoPE on, rope_theta < 0 or
// not finite, one gain defined without the other, a gain not [D] or of another dtype/device.
#include <cstdint>

#include "framework/autograd/variable.h"

namespace zt::ops {

Variable qk_norm_rope(const Variable& qkv, int64_t n_head, int64_t n_kv_head, double rope_theta, const Variable& q_gain,
                      const Variable& k_gain, double eps = 1e-6);

}  // namespace zt::ops
