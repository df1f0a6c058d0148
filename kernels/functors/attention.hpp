#pragma once
// GELU and softmax written once for the host and CUDA: GELU as element functors (parallel_for),
// softmax as row functors (kernels/functors/rows.hpp: a host thread or a warp per row). Storage types
// are float or gppf::bf16, math is f32. The softmax rows take separate storage types for their
// operands so that attention can read f32 scores and write bf16 probabilities in one pass.
#include <math.h>  // erff, expf, fmaxf, INFINITY by the global names CUDA device code has too

#include <cstdint>
#include <type_traits>

#include "kernels/functors/elementwise.hpp"
#include "kernels/functors/rows.hpp"

namespace gppf::kernels {

inline constexpr float kGeluSqrtHalf = 0.70710678118654752f;    // 1 / sqrt(2)
inline constexpr float kGeluInvSqrt2Pi = 0.39894228040143268f;  // 1 / sqrt(2 pi)

template <class T>
struct GeluFwdFunctor {
  const T* x;
  T* y;
  GPPF_HD void operator()(std::int64_t i) const {
    const float v = to_f32(x[i]);
    y[i] = from_f32<T>(0.5f * v * (1.0f + erff(v * kGeluSqrtHalf)));
  }
};

// d/dx [x Phi(x)] = Phi(x) + x phi(x).
template <class T, bool Accumulate>
struct GeluBwdFunctor {
  const T* x;
  const T* dy;
  T* dx;
  GPPF_HD void operator()(std::int64_t i) const {
    const float v = to_f32(x[i]);
    const float cdf = 0.5f * (1.0f + erff(v * kGeluSqrtHalf));
    const float g = to_f32(dy[i]) * (cdf + v * kGeluInvSqrt2Pi * expf(-0.5f * v * v));
    dx[i] = from_f32<T>(Accumulate ? to_f32(dx[i]) + g : g);
  }
};

// y = exp(x - max) / sum(exp(x - max)) over a row of `cols`; y may be x (each element is read before
// it is written, by the same lane).
template <class TX, class TY, class Lanes>
struct SoftmaxFwdRow {
  const TX* x;
  TY* y;
  std::int64_t cols;
  GPPF_HD void operator()(std::int64_t r) const {
    const TX* xr = x + r * cols;
    TY* yr = y + r * cols;
    float m = -INFINITY;
    for (std::int64_t j = Lanes::lane(); j < cols; j += Lanes::kCount) m = fmaxf(m, to_f32(xr[j]));
    m = Lanes::max(m);
    float s = 0.0f;
    // An f32 output keeps the exponentials for the last pass (one expf per element, not two); a bf16
    // one would round them twice, so they are computed again.
    constexpr bool kKeep = std::is_same_v<TY, float>;
    for (std::int64_t j = Lanes::lane(); j < cols; j += Lanes::kCount) {
      const float e = expf(to_f32(xr[j]) - m);
      s += e;
      if constexpr (kKeep) yr[j] = e;
    }
    const float inv = 1.0f / Lanes::sum(s);
    for (std::int64_t j = Lanes::lane(); j < cols; j += Lanes::kCount) {
      if constexpr (kKeep)
        yr[j] *= inv;
      else
        yr[j] = from_f32<TY>(expf(to_f32(xr[j]) - m) * inv);
    }
  }
};

// dx = y * (dy - sum(dy * y)) over a row; dx may be dy.
template <class TY, class TG, class TD, class Lanes>
struct SoftmaxBwdRow {
  const TY* y;
  const TG* dy;
  TD* dx;
  std::int64_t cols;
  GPPF_HD void operator()(std::int64_t r) const {
    const TY* yr = y + r * cols;
    const TG* dyr = dy + r * cols;
    TD* dxr = dx + r * cols;
    float s = 0.0f;
    for (std::int64_t j = Lanes::lane(); j < cols; j += Lanes::kCount) s += to_f32(dyr[j]) * to_f32(yr[j]);
    s = Lanes::sum(s);
    for (std::int64_t j = Lanes::lane(); j < cols; j += Lanes::kCount)
      dxr[j] = from_f32<TD>(to_f32(yr[j]) * (to_f32(dyr[j]) - s));
  }
};

}  // namespace gppf::kernels
