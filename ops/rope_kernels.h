#pragma once
// CPU kernels behind ops/rope.h (internal to ops/).
#include "framework/tensor.h"

namespace zt::ops {

// The layout of qkv [B, T, (n_head + 2 n_kv_head) D] and the options of qk_norm_rope.
struct QkNormRopeShape {
  int64_t tokens = 0;  // B * T; token n is at position n % T
  int64_t T = 0, n_head = 0, n_kv_head = 0, D = 0;
  double rope_theta = 0;  // > 0: RoPE on
  double eps = 0;
  int64_t heads() const { return n_head + 2 * n_kv_head; }
  int64_t qk_heads() const { return n_head + n_kv_head; }
};

// The op's output. With gains (both defined; else no QK-norm) also writes rstd [tokens,
// n_head + n_kv_head], 1/sqrt(mean(x^2) + eps) of each q and k head (f32 for f32/bf16, f64 for
// f64); without, rstd is left undefined.
Tensor qk_norm_rope_forward_cpu(const Tensor& qkv, const Tensor& q_gain, const Tensor& k_gain, const QkNormRopeShape& s,
                                Tensor& rstd);

// Gradients of qkv and the gains given grad of the output; a pointer left null skips that
// gradient. Per q/k head: dn = the output gradient rotated back (by -angle), then with QK-norm
// xhat = x rstd, dx = rstd (dn gain - xhat mean_j(dn gain xhat)), dgain = sum over tokens and
// heads of that kind of dn xhat; v heads pass the gradient through.
void qk_norm_rope_backward_cpu(const Tensor& grad, const Tensor& qkv, const Tensor& q_gain, const Tensor& k_gain,
                               const Tensor& rstd, const QkNormRopeShape& s, Tensor* dqkv, Tensor* dq_gain,
                               Tensor* dk_gain);

// CUDA kernels (ops/rope_cuda.cu), same contracts on device tensors; outputs on the inputs' device.
#ifdef ZTRAIN_WITH_CUDA
Tensor qk_norm_rope_forward_cuda(const Tensor& qkv, const Tensor& q_gain, const Tensor& k_gain,
                                 const QkNormRopeShape& s, Tensor& rstd);
void qk_norm_rope_backward_cuda(const Tensor& grad, const Tensor& qkv, const Tensor& q_gain, const Tensor& k_gain,
                                const Tensor& rstd, const QkNormRopeShape& s, Tensor* dqkv, Tensor* dq_gain,
                                Tensor* dk_gain);
#endif

}  // namespace zt::ops
