// causal_self_attention's fused path on CUDA (ops/attention_kernels.h): which fused backend
// takes a call, and the calls into cuDNN's graphs or our flash kernels. Built only with CUDA;
// ops/attention.cpp reaches it through ZT_ON_DEVICE.
#include <cstdint>

#include "ops/attention_cudnn.h"
#include "ops/attention_kernels.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

// The byte offsets of the k and v parts in a row of a [B, T, (H + 2 Hkv) D] projection (or
// of its gradient): k after the H query heads, v after the Hkv key heads.
struct PartOffsets {
  size_t k, v;
};
PartOffsets part_offsets(const Tensor& qkv, int64_t H, int64_t Hkv) {
  const size_t head = static_cast<size_t>(qkv.size(2) / (H + 2 * Hkv)) * dtype_size(qkv.dtype());
  return {static_cast<size_t>(H) * head, static_cast<size_t>(H + Hkv) * head};
}

// The heads of a contiguous [B, T, (H + 2 Hkv) D] projection as a [B, H, T, D] view (q) and
// two [B, Hkv, T, D] views (k, v), all with the strides of one row of width W = (H + 2 Hkv) D.
FlashArgs flash_args(const Tensor& qkv, int64_t H, int64_t Hkv) {
  FlashArgs a;
  const int64_t W = qkv.size(2);
  const PartOffsets off = part_offsets(qkv, H, Hkv);
  a.q = qkv.raw_data();
  a.k = static_cast<const char*>(qkv.raw_data()) + off.k;
  a.v = static_cast<const char*>(qkv.raw_data()) + off.v;
  a.B = qkv.size(0);
  a.T = qkv.size(1);
  a.H = H;
  a.Hkv = Hkv;
  a.D = W / (H + 2 * Hkv);
  a.in = {a.T * W, a.D, W};
  return a;
}

// The heads of a [B, T, H D] activation (merged heads) as a [B, H, T, D] view.
AttentionLayout merged_layout(const Tensor& qkv, int64_t H, int64_t Hkv) {
  const int64_t T = qkv.size(1), D = qkv.size(2) / (H + 2 * Hkv);
  return {T * H * D, D, H * D};
}

// Whether our flash kernels take this call: bf16 on a GPU, D = 32 or 64, 16-byte aligned rows.
bool use_flash(const Tensor& x, int64_t D) {
  return x.device().is_cuda() && flash_attention_supported(x.dtype(), D) &&
         reinterpret_cast<uintptr_t>(x.raw_data()) % 16 == 0;
}

}  // namespace

AttentionBackend fused_attention_backend_cuda(const Tensor& x, int64_t H, int64_t Hkv, int64_t D,
                                              AttentionBackend first) {
#ifdef ZTRAIN_WITH_CUDNN
  if (first == AttentionBackend::cudnn &&
      cudnn_attention_supported(flash_args(x, H, Hkv), x.dtype(), merged_layout(x, H, Hkv), x.device().index))
    return AttentionBackend::cudnn;
#endif
  // Our flash kernels have no grouped heads: those go on down the list.
  if (first != AttentionBackend::unfused && Hkv == H && use_flash(x, D)) return AttentionBackend::flash;
  return AttentionBackend::unfused;
}

void fused_attention_forward_cuda(AttentionBackend backend, const Tensor& x, int64_t H, int64_t Hkv, Tensor& out,
                                  Tensor& lse) {
  float* stats = static_cast<float*>(lse.raw_data());
  const FlashArgs args = flash_args(x, H, Hkv);
  if (backend == AttentionBackend::cudnn) {
#ifdef ZTRAIN_WITH_CUDNN
    cudnn_attention_forward(args, x.dtype(), out.raw_data(), merged_layout(x, H, Hkv), stats, x.device().index);
#endif
  } else {
    flash_attention_forward_cuda(args, out.raw_data(), merged_layout(x, H, Hkv), stats, x.device().index);
  }
}

Tensor fused_attention_backward_cuda(AttentionBackend backend, const Tensor& qkv, int64_t H, int64_t Hkv,
                                     const Tensor& out, const Tensor& lse, const Tensor& grad) {
  Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
  Tensor g = grad_as(grad, qkv.dtype()).contiguous();
  if (reinterpret_cast<uintptr_t>(g.raw_data()) % 16 != 0) g = g.clone();  // a view at an odd offset
  char* d = static_cast<char*>(dqkv.raw_data());
  const PartOffsets off = part_offsets(qkv, H, Hkv);  // d qkv has qkv's layout
  const FlashArgs args = flash_args(qkv, H, Hkv);
  const AttentionLayout out_layout = merged_layout(qkv, H, Hkv);
  const float* stats = static_cast<const float*>(lse.raw_data());
  if (backend == AttentionBackend::cudnn) {
#ifdef ZTRAIN_WITH_CUDNN
    cudnn_attention_backward(args, qkv.dtype(), out.raw_data(), g.raw_data(), out_layout, stats, d, d + off.k,
                             d + off.v, qkv.device().index);
#endif
  } else {
    flash_attention_backward_cuda(args, out.raw_data(), g.raw_data(), out_layout, stats, d, d + off.k, d + off.v,
                                  args.in, qkv.device().index);
  }
  return dqkv;
}

}  // namespace zt::ops
