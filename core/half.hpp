#pragma once
// bf16 and f16 <-> float on host and device alike, carried as 16-bit patterns so that this compiles
// without cuda_bf16.h. Rounding is round-to-nearest-even, as __float2bfloat16_rn / __float2half_rn.
#include <cstdint>

#include "core/hd.hpp"

namespace gppf {

GPPF_HD GPPF_INLINE float bits_to_float(std::uint32_t u) {
  union {
    std::uint32_t u;
    float f;
  } v{u};
  return v.f;
}
GPPF_HD GPPF_INLINE std::uint32_t float_to_bits(float f) {
  union {
    float f;
    std::uint32_t u;
  } v{f};
  return v.u;
}

GPPF_HD GPPF_INLINE float load_bf16(std::uint16_t b) { return bits_to_float(static_cast<std::uint32_t>(b) << 16); }
GPPF_HD GPPF_INLINE std::uint16_t store_bf16(float f) {
  const std::uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

GPPF_HD GPPF_INLINE float load_f16(std::uint16_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    // subnormal (or zero): man * 2^-24, exact in float
    const float mag = static_cast<float>(man) * 5.9604644775390625e-08f;
    return sign ? -mag : mag;
  }
  return bits_to_float(sign | (exp + 112u) << 23 | man << 13);
}

GPPF_HD GPPF_INLINE std::uint16_t store_f16(float f) {
  const std::uint32_t u = float_to_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (abs < 0x38800000u) {
    if (abs < 0x33000000u) return sign;
    const std::uint32_t exp = abs >> 23;
    const std::uint32_t man = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - exp;
    std::uint32_t half = man >> shift;
    const std::uint32_t rem = man & ((1u << shift) - 1u);
    const std::uint32_t mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  const std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (((rounded >> 13) - (112u << 10)) & 0x7fffu));
}

}  // namespace gppf
