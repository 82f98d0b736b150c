#include "framework/dtype.h"

namespace zt {

DType parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32") return DType::f32;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  if (s == "f64" || s == "float64") return DType::f64;
  if (s == "i32" || s == "int32") return DType::i32;
  if (s == "i64" || s == "int64") return DType::i64;
  ZT_FAIL("unknown dtype '", s, "' (expected f32, bf16, f64, i32 or i64)");
}

}  // namespace zt
