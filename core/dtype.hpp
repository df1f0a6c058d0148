#pragma once
// Element types. bf16 and f16 are storage types on the host (fp32 math); on CUDA the kernels use
// __nv_bfloat16 / __half, which have the same bit layout.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/half.hpp"

namespace gppf {

enum class DType : std::uint8_t { F32, BF16, F16, I32, I64, U8 };

std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
// Parses "f32|bf16|f16|i32|i64|u8"; throws gppf::Error naming the value otherwise.
DType parse_dtype(const std::string& name);

struct bf16 {
  std::uint16_t bits = 0;
};
struct f16 {
  std::uint16_t bits = 0;
};

inline float bf16_to_float(bf16 v) { return load_bf16(v.bits); }
inline bf16 float_to_bf16(float f) { return bf16{store_bf16(f)}; }
inline float f16_to_float(f16 v) { return load_f16(v.bits); }
inline f16 float_to_f16(float f) { return f16{store_f16(f)}; }

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::F32;
};
template <>
struct dtype_of<bf16> {
  static constexpr DType value = DType::BF16;
};
template <>
struct dtype_of<f16> {
  static constexpr DType value = DType::F16;
};
template <>
struct dtype_of<std::int32_t> {
  static constexpr DType value = DType::I32;
};
template <>
struct dtype_of<std::int64_t> {
  static constexpr DType value = DType::I64;
};
template <>
struct dtype_of<std::uint8_t> {
  static constexpr DType value = DType::U8;
};

}  // namespace gppf
