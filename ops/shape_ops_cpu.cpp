#include <cstring>

#include "ops/cpu_compute.h"
#include "ops/shape_ops_kernels.h"

namespace zt::ops {

namespace {

// Copies `count` elements of `esize` bytes from a strided source (stride in elements).
void gather_row(char* dst, const char* src, int64_t count, int64_t stride, size_t esize) {
  if (stride == 1) {
    std::memcpy(dst, src, static_cast<size_t>(count) * esize);
    return;
  }
  auto typed = [&](auto tag) {
    using U = decltype(tag);
    U* d = reinterpret_cast<U*>(dst);
    const U* s = reinterpret_cast<const U*>(src);
    for (int64_t i = 0; i < count; ++i) d[i] = s[i * stride];
  };
  switch (esize) {
    case 2: typed(uint16_t{}); break;
    case 4: typed(uint32_t{}); break;
    case 8: typed(uint64_t{}); break;
    default:
      for (int64_t i = 0; i < count; ++i) std::memcpy(dst + i * esize, src + i * stride * esize, esize);
  }
}

}  // namespace

Tensor contiguous_cpu(const Tensor& t) {
  if (t.is_contiguous()) return t;
  ZT_CHECK(t.device().is_cpu(), "contiguous_cpu on a ", t.device().str(), " tensor");
  Tensor out = Tensor::empty(t.shape(), t.dtype());
  const int64_t nd = t.dim();
  const int64_t inner = t.shape()[nd - 1], inner_stride = t.strides()[nd - 1];
  const int64_t rows = inner == 0 ? 0 : t.numel() / inner;
  const size_t esize = dtype_size(t.dtype());
  const char* src = static_cast<const char*>(t.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  const Shape& shape = t.shape();
  const Shape& strides = t.strides();
#pragma omp parallel for schedule(static) if (t.numel() >= cpu::kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    // Source offset of row r: unravel r over the leading dimensions.
    int64_t rest = r, off = 0;
    for (int64_t d = nd - 2; d >= 0; --d) {
      off += (rest % shape[d]) * strides[d];
      rest /= shape[d];
    }
    gather_row(dst + r * inner * esize, src + off * static_cast<int64_t>(esize), inner, inner_stride, esize);
  }
  return out;
}

Tensor pad_last_cpu(const Tensor& piece_in, int64_t full, int64_t offset) {
  Tensor piece = contiguous_cpu(piece_in);
  const int64_t part = piece.shape().back();
  Shape shape = piece.shape();
  shape.back() = full;
  Tensor out = Tensor::empty(shape, piece.dtype());
  const int64_t rows = part == 0 ? shape_numel(shape) / std::max<int64_t>(full, 1) : piece.numel() / part;
  const size_t esize = dtype_size(piece.dtype());
  const char* src = static_cast<const char*>(piece.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
#pragma omp parallel for schedule(static) if (out.numel() >= cpu::kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    char* row = dst + r * full * esize;
    std::memset(row, 0, static_cast<size_t>(full) * esize);  // all-zero bits are 0.0 in every float type
    std::memcpy(row + offset * esize, src + r * part * esize, static_cast<size_t>(part) * esize);
  }
  return out;
}

}  // namespace zt::ops
