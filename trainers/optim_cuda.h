#pragma once
// CUDA kernels of the optimizer step (trainers/adamw_cuda.cu, trainers/grad_clip_cuda.cu):
// multi-tensor launches that walk many parameters per kernel, so an update of GPT-2's 148
// tensors is a handful of launches and the global gradient norm costs one host read.
// The kernels are declared only in CUDA builds; callers reach them through ZT_ON_DEVICE
// (ops/device_dispatch.h).
#include <cstdint>
#include <vector>

namespace zt::optim_cuda {

// One parameter's contiguous f32 buffers on the device.
struct AdamWTensor {
  float* p = nullptr;
  const float* g = nullptr;
  float* m = nullptr;
  float* v = nullptr;
  int64_t n = 0;
  float decay_factor = 1;  // 1 - lr * weight_decay, or 1 for parameters without decay
  // Optional bf16 copy of p (n elements) rewritten with the updated weights, rounded to
  // nearest even as a cast would: the compute copy the next forward uses (framework/autograd/mixed_precision.h).
  uint16_t* p_bf16 = nullptr;
};

#ifdef ZTRAIN_WITH_CUDA

// AdamW's update (trainers/adamw.h) on every tensor, all on `device`; step_size = lr / (1 - b1^t),
// inv_sqrt_bc2 = 1 / sqrt(1 - b2^t); each gradient element is used times grad_scale (f32, as
// Tensor::scale_ multiplies on the device). No host synchronisation.
void adamw_update(int device, const std::vector<AdamWTensor>& tensors, float b1, float b2, float eps,
                  float step_size, float inv_sqrt_bc2, float grad_scale = 1.0f);

// sum over all tensors of sum_i g_i^2, accumulated in f64 in a fixed order (the same value on
// every run); one 8-byte read back (a host sync). Tensors are contiguous f32 on `device`.
double sum_squares(int device, const std::vector<const float*>& data, const std::vector<int64_t>& sizes);

#endif

}  // namespace zt::optim_cuda
