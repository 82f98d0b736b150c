// The global gradient norm's sum of squares on the device: per-chunk f64 partials written
// to fixed slots (multi-tensor launches), then one block sums the slots in order. No
// atomics, so the value is the same on every run; one 8-byte read at the end.
#include <algorithm>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/kernel_utils.cuh"
#include "framework/cuda/op_profiler.h"
#include "framework/cuda/stream.h"
#include "framework/tensor.h"
#include "trainers/optim_cuda.h"

namespace zt::optim_cuda {

namespace {

using cuda::kThreads;

constexpr int kTensorsPerLaunch = 128;  // the table below stays under the 4 KB kernel-parameter limit
constexpr int64_t kChunk = kThreads * 16;

struct Gradient {
  const float* data;
  int64_t n;
};
using Table = cuda::MultiTensorTable<Gradient, kTensorsPerLaunch>;

__device__ double block_sum(double v) {
  __shared__ double scratch[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  v = threadIdx.x < (blockDim.x >> 5) ? scratch[threadIdx.x] : 0.0;
  if (threadIdx.x < 32)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void partial_squares_kernel(Table table, double* partial) {
  const int lo = table.entry_of_block();
  const float* g = table.entry[lo].data;
  const int64_t begin = (blockIdx.x - table.first_block[lo]) * kChunk;
  const int64_t end = min(table.entry[lo].n, begin + kChunk);
  double s = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) s += static_cast<double>(g[i]) * g[i];
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void finish_kernel(const double* partial, int64_t n, double* out) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

}  // namespace

double sum_squares(int device, const std::vector<const float*>& data, const std::vector<int64_t>& sizes) {
  cuda::OpRange range("grad_norm");
  cuda::set_device(device);
  int64_t total_blocks = 0;
  for (int64_t n : sizes) total_blocks += cuda::ceil_div(n, kChunk);
  if (total_blocks == 0) return 0.0;
  Tensor partial = Tensor::empty({total_blocks}, DType::f64, Device::cuda(device));
  Tensor out = Tensor::empty({}, DType::f64, Device::cuda(device));
  double* pp = static_cast<double*>(partial.raw_data());
  int64_t offset = 0;
  for (size_t start = 0; start < data.size(); start += kTensorsPerLaunch) {
    Table table;
    for (size_t i = start; i < std::min(data.size(), start + kTensorsPerLaunch); ++i)
      if (sizes[i] != 0) table.add({data[i], sizes[i]}, cuda::ceil_div(sizes[i], kChunk));
    const int64_t blocks = table.blocks();
    if (blocks == 0) continue;
    partial_squares_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, cuda::current_stream()>>>(table, pp + offset);
    ZT_CUDA_CHECK_LAUNCH();
    offset += blocks;
  }
  finish_kernel<<<1, 1024, 0, cuda::current_stream()>>>(pp, offset, static_cast<double*>(out.raw_data()));
  ZT_CUDA_CHECK_LAUNCH();
  return out.item();
}

}  // namespace zt::optim_cuda
