#pragma once
// Elementwise kernels behind Tensor::fill_ / scale_ / add_ / copy_ for contiguous CUDA
// tensors on `device`, issued on current_stream() without a host synchronisation. Element conversions
// follow the host's: floats round to nearest even, integers truncate.
#include <cstdint>
#include <vector>

#include "framework/device_backend.h"
#include "framework/dtype.h"

namespace zt::cuda {

void fill(int device, void* dst, DType dtype, int64_t n, double value);
void scale(int device, void* data, DType dtype, int64_t n, double factor);
// a += alpha * b, b converted to a's dtype.
void add_scaled(int device, void* a, DType a_dtype, const void* b, DType b_dtype, int64_t n, double alpha);
void convert(int device, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n);

// Many bf16 -> f32 widenings in a few launches (each launch a table of up to 64 tensors, one
// block per chunk of one tensor): dst := src, or dst += src when accumulate. The engine's
// conversion of bf16 parameter gradients into f32 master gradients, ~150 tensors a GPT-2
// step, most of them too small to fill the GPU alone (a launch each cost 0.9 ms a step).
using WidenJob = ::zt::WidenJob;  // framework/device_backend.h
void widen_bf16_to_f32_many(int device, const std::vector<WidenJob>& jobs);

}  // namespace zt::cuda
