#pragma once
// Loads and stores of any floating storage type, and the cast kernel, for host and device.
#include <cstdint>

#include "core/half.hpp"
#include "kernels/parallel_for.hpp"

namespace gppf::kernels {

enum class FloatKind : std::uint8_t { F32, BF16, F16 };

GPPF_HD GPPF_INLINE float load_float(const void* p, std::int64_t i, FloatKind k) {
  if (k == FloatKind::F32) return static_cast<const float*>(p)[i];
  const std::uint16_t b = static_cast<const std::uint16_t*>(p)[i];
  return k == FloatKind::BF16 ? load_bf16(b) : load_f16(b);
}
GPPF_HD GPPF_INLINE void store_float(void* p, std::int64_t i, FloatKind k, float v) {
  if (k == FloatKind::F32)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<std::uint16_t*>(p)[i] = k == FloatKind::BF16 ? store_bf16(v) : store_f16(v);
}

struct CastFunctor {
  const void* src;
  void* dst;
  FloatKind src_kind, dst_kind;
  GPPF_HD void operator()(std::int64_t i) const { store_float(dst, i, dst_kind, load_float(src, i, src_kind)); }
};

}  // namespace gppf::kernels
