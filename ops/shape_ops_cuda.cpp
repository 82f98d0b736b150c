// CUDA side of ops/shape_ops.h. Layout changes on the device are Tensor copies (the strided
// copy kernel of framework/cuda/strided_copy.cu); this adds split_last's gradient.
#include "framework/cuda/op_profiler.h"
#include "ops/shape_ops_kernels.h"

namespace zt::ops {

Tensor pad_last_cuda(const Tensor& piece, int64_t full, int64_t offset) {
  cuda::OpRange range("shape");
  Shape shape = piece.shape();
  const int64_t part = shape.back();
  shape.back() = full;
  Tensor out = Tensor::zeros(shape, piece.dtype(), piece.device());
  Tensor window = out.slice(static_cast<int64_t>(shape.size()) - 1, offset, offset + part);
  window.copy_(piece);
  return out;
}

}  // namespace zt::ops
