#include "framework/checked_size.h"

#include "framework/error.h"

namespace zt {

int64_t checked_shape_numel(const Shape& s, const std::string& what) {
  int64_t product = 1;
  bool empty = false;
  for (int64_t d : s) {
    ZT_CHECK(d >= 0, what, ": negative dimension in shape ", shape_str(s));
    if (d == 0) {
      empty = true;
      continue;
    }
    ZT_CHECK(!__builtin_mul_overflow(product, d, &product), what, ": shape ", shape_str(s),
             " is too large: its dimensions multiply past 2^63-1");
  }
  return empty ? 0 : product;
}

size_t checked_nbytes(const Shape& s, DType dtype, const std::string& what) {
  int64_t bytes = 0;
  ZT_CHECK(!__builtin_mul_overflow(checked_shape_numel(s, what), static_cast<int64_t>(dtype_size(dtype)), &bytes),
           what, ": shape ", shape_str(s), " of ", dtype_name(dtype), " needs more than 2^63-1 bytes");
  return static_cast<size_t>(bytes);
}

}  // namespace zt
