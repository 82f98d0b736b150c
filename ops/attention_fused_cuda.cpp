// causal_self_attention's fused path on CUDA (ops/attention_kernels.h): which fused backend
// takes a call, and the calls into cuDNN's graphs or our flash kernels. Built only with CUDA;
// ops/attention.cpp reaches it through ZT_ON_DEVICE.
#include <cstdint>

#include "ops/attention_cudnn.h"
#include "ops/attention_kernels.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

// The heads of a contiguous [B, T, 3C] projection as three [B, H, T, D] views.
FlashArgs flash_args(const Tensor& qkv, int64_t H) {
  FlashArgs a;
  const int64_t C = qkv.size(2) / 3;
  const size_t part = static_cast<size_t>(C) * dtype_size(qkv.dtype());
  a.q = qkv.raw_data();
  a.k = static_cast<const char*>(qkv.raw_data()) + part;
  a.v = static_cast<const char*>(qkv.raw_data()) + 2 * part;
  a.B = qkv.size(0);
  a.T = qkv.size(1);
  a.H = H;
  a.D = C / H;
  a.in = {a.T * 3 * C, a.D, 3 * C};
  return a;
}

// The heads of a [B, T, C] activation (merged heads) as a [B, H, T, D] view.
AttentionLayout merged_layout(const Tensor& qkv, int64_t H) {
  const int64_t T = qkv.size(1), C = qkv.size(2) / 3;
  return {T * C, C / H, C};
}

// Whether our flash kernels take this call: bf16 on a GPU, D = 32 or 64, 16-byte aligned rows.
bool use_flash(const Tensor& x, int64_t D) {
  return x.device().is_cuda() && flash_attention_supported(x.dtype(), D) &&
         reinterpret_cast<uintptr_t>(x.raw_data()) % 16 == 0;
}

}  // namespace

AttentionBackend fused_attention_backend_cuda(const Tensor& x, int64_t H, int64_t D, AttentionBackend first) {
#ifdef ZTRAIN_WITH_CUDNN
  if (first == AttentionBackend::cudnn &&
      cudnn_attention_supported(flash_args(x, H), x.dtype(), merged_layout(x, H), x.device().index))
    return AttentionBackend::cudnn;
#endif
  if (first != AttentionBackend::unfused && use_flash(x, D)) return AttentionBackend::flash;
  return AttentionBackend::unfused;
}

void fused_attention_forward_cuda(AttentionBackend backend, const Tensor& x, int64_t H, Tensor& out, Tensor& lse) {
  float* stats = static_cast<float*>(lse.raw_data());
  if (backend == AttentionBackend::cudnn) {
#ifdef ZTRAIN_WITH_CUDNN
    cudnn_attention_forward(flash_args(x, H), x.dtype(), out.raw_data(), merged_layout(x, H), stats, x.device().index);
#endif
  } else {
    flash_attention_forward_cuda(flash_args(x, H), out.raw_data(), merged_layout(x, H), stats, x.device().index);
  }
}

Tensor fused_attention_backward_cuda(AttentionBackend backend, const Tensor& qkv, int64_t H, const Tensor& out,
                                     const Tensor& lse, const Tensor& grad) {
  Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
  Tensor g = grad_as(grad, qkv.dtype()).contiguous();
  if (reinterpret_cast<uintptr_t>(g.raw_data()) % 16 != 0) g = g.clone();  // a view at an odd offset
  char* d = static_cast<char*>(dqkv.raw_data());
  const size_t part = static_cast<size_t>(qkv.size(2) / 3) * dtype_size(qkv.dtype());
  const FlashArgs args = flash_args(qkv, H);
  const float* stats = static_cast<const float*>(lse.raw_data());
  if (backend == AttentionBackend::cudnn) {
#ifdef ZTRAIN_WITH_CUDNN
    cudnn_attention_backward(args, qkv.dtype(), out.raw_data(), g.raw_data(), merged_layout(qkv, H), stats, d,
                             d + part, d + 2 * part, qkv.device().index);
#endif
  } else {
    flash_attention_backward_cuda(args, out.raw_data(), g.raw_data(), merged_layout(qkv, H), stats, d, d + part,
                                  d + 2 * part, args.in, qkv.device().index);
  }
  return dqkv;
}

}  // namespace zt::ops
