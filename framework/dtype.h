#pragma once
// Element types of a Tensor and the bf16 storage type.
#include <cstdint>
#include <cstring>
#include <string>

#include "framework/error.h"

namespace zt {

enum class DType : uint8_t { f32, bf16, f64, i32, i64 };

// bfloat16: the top 16 bits of an IEEE float32. Conversion rounds to nearest even;
// NaN stays NaN. Host-side type; CUDA code uses __nv_bfloat16 on the same bits.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  bf16(float f) {  // NOLINT(google-explicit-constructor): behaves like a float
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      bits = static_cast<uint16_t>(u >> 16);
    }
  }
  operator float() const {  // NOLINT(google-explicit-constructor)
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f64: return "f64";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}

inline bool is_floating(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f64; }

// Parses "f32", "bf16", "f64", "i32", "i64" (and "float32", "bfloat16", "float64").
DType parse_dtype(const std::string& s);

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };

// Calls f(T{}) with T the C++ type of dtype t: dispatch(t, [&](auto tag) { using T = decltype(tag); ... }).
template <class F>
decltype(auto) dispatch(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::bf16: return f(bf16{});
    case DType::f64: return f(double{});
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
  }
  ZT_FAIL("unknown dtype");
}

// Same, restricted to the floating types an op supports; other dtypes are an error naming `what`.
template <class F>
decltype(auto) dispatch_float(DType t, const char* what, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::bf16: return f(bf16{});
    case DType::f64: return f(double{});
    default: ZT_FAIL(what, ": expected a floating dtype (f32, bf16, f64), got ", dtype_name(t));
  }
}

}  // namespace zt
