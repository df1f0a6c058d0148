#pragma once
// The element-wise halves of batch norm, written once for the host (OpenMP) and CUDA: the per-channel
// reductions are backend-specific, after which every element is an affine map of its inputs with
// per-channel coefficients. T is float or gppf::bf16 (activations); coefficients are f32.
#include <cstdint>

#include "core/dtype.hpp"
#include "kernels/parallel_for.hpp"

namespace gppf::kernels {

// Activation loads and stores (f32 math on bf16 storage); a namespace of their own so that other
// families' helpers cannot collide with them.
namespace normpool {
GPPF_HD GPPF_INLINE float load(float v) { return v; }
GPPF_HD GPPF_INLINE float load(bf16 v) { return load_bf16(v.bits); }
template <class T>
GPPF_HD GPPF_INLINE T store(float v);
template <>
GPPF_HD GPPF_INLINE float store<float>(float v) {
  return v;
}
template <>
GPPF_HD GPPF_INLINE bf16 store<bf16>(float v) {
  bf16 b;
  b.bits = store_bf16(v);
  return b;
}
}  // namespace normpool

// y = (x - mean[c]) * scale[c] + beta[c], then max(y, 0) when relu. Centring first keeps f32 exact
// enough when |mean| >> std.
// kRelu is a template argument so that the branch-free loop vectorises on the host.
template <class T, bool kRelu>
struct BatchNormApplyFunctor {
  const T* x;
  T* y;
  const float* mean;
  const float* scale;
  const float* beta;
  std::int64_t channels;  // the coefficients' period: C, or a multiple of C with tiled coefficients
  GPPF_HD GPPF_INLINE void at(std::int64_t i, std::int64_t c) const {
    float v = (normpool::load(x[i]) - mean[c]) * scale[c] + beta[c];
    if constexpr (kRelu) v = v > 0.0f ? v : 0.0f;
    y[i] = normpool::store<T>(v);
  }
  GPPF_HD void operator()(std::int64_t i) const { at(i, i % channels); }
};

// dx = a[c] * (g - b[c] - (x - mean[c]) * k[c]), g = dy masked by y > 0 when relu: the standard
// gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)) with a = gamma * invstd, b = mean(g),
// k = invstd^2 * mean(g * (x - mean)).
template <class T, bool kRelu>
struct BatchNormBwdDataFunctor {
  const T* x;
  const T* y;  // read only with kRelu
  const T* dy;
  T* dx;
  const float* mean;
  const float* a;
  const float* b;
  const float* k;
  std::int64_t channels;  // as in BatchNormApplyFunctor
  GPPF_HD GPPF_INLINE void at(std::int64_t i, std::int64_t c) const {
    float g = normpool::load(dy[i]);
    if constexpr (kRelu) g = normpool::load(y[i]) > 0.0f ? g : 0.0f;
    dx[i] = normpool::store<T>(a[c] * (g - b[c] - (normpool::load(x[i]) - mean[c]) * k[c]));
  }
  GPPF_HD void operator()(std::int64_t i) const { at(i, i % channels); }
};

}  // namespace gppf::kernels
