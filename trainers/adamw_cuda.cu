// Multi-tensor AdamW on the device: one launch updates up to kTensorsPerLaunch parameters,
// each block a chunk of one parameter (the block finds its parameter in a prefix table).
#include <cuda_bf16.h>

#include <algorithm>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/kernel_utils.cuh"
#include "framework/cuda/op_profiler.h"
#include "framework/cuda/stream.h"
#include "trainers/optim_cuda.h"

namespace zt::optim_cuda {

namespace {

using cuda::kThreads;

constexpr int kTensorsPerLaunch = 48;  // the table below stays under the 4 KB kernel-parameter limit
constexpr int64_t kChunk = kThreads * 8;  // elements per block

using Table = cuda::MultiTensorTable<AdamWTensor, kTensorsPerLaunch>;

__global__ void adamw_kernel(Table table, float b1, float b2, float eps, float step_size, float inv_sqrt_bc2,
                             float grad_scale) {
  const int e = table.entry_of_block();
  const AdamWTensor& t = table.entry[e];
  const int64_t begin = (blockIdx.x - table.first_block[e]) * kChunk;
  const int64_t end = min(t.n, begin + kChunk);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const float g = t.g[i] * grad_scale;  // clipping's factor (1 when not clipped: exact)
    const float m = b1 * t.m[i] + (1.0f - b1) * g;
    const float v = b2 * t.v[i] + (1.0f - b2) * g * g;
    t.m[i] = m;
    t.v[i] = v;
    const float p = t.p[i] * t.decay_factor - step_size * m / (sqrtf(v) * inv_sqrt_bc2 + eps);
    t.p[i] = p;
    if (t.p_bf16) reinterpret_cast<__nv_bfloat16*>(t.p_bf16)[i] = __float2bfloat16_rn(p);
  }
}

}  // namespace

void adamw_update(int device, const std::vector<AdamWTensor>& tensors, float b1, float b2, float eps,
                  float step_size, float inv_sqrt_bc2, float grad_scale) {
  cuda::OpRange range("adamw");
  cuda::set_device(device);
  for (size_t start = 0; start < tensors.size(); start += kTensorsPerLaunch) {
    Table table;
    for (size_t i = start; i < std::min(tensors.size(), start + kTensorsPerLaunch); ++i)
      if (tensors[i].n != 0) table.add(tensors[i], cuda::ceil_div(tensors[i].n, kChunk));
    const int64_t blocks = table.blocks();
    if (blocks == 0) continue;
    ZT_CHECK(blocks < (int64_t{1} << 31), "AdamW: too many elements for one launch");
    adamw_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, cuda::current_stream()>>>(table, b1, b2, eps, step_size,
                                                                                         inv_sqrt_bc2, grad_scale);
    ZT_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace zt::optim_cuda
