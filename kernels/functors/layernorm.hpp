#pragma once
// Layer norm written once for the host and CUDA (kernels/functors/rows.hpp): the row functors run a
// row with one host thread or one warp; the parameter gradients' column sums are backend-specific
// loops around layernorm_param_terms. T is float or gppf::bf16 (activations); math is f32.
#include <math.h>  // sqrtf by the global name CUDA device code has too

#include <cstdint>

#include "kernels/functors/elementwise.hpp"
#include "kernels/functors/rows.hpp"
#include "kernels/layernorm.hpp"

namespace gppf::kernels {

// Two passes for the statistics (mean, then the squared deviations from it: no cancellation when
// |mean| >> std), a third for y.
template <class T, class Lanes>
struct LayerNormFwdRow {
  const T* x;
  T* y;
  const float* gamma;
  const float* beta;
  float* mean;
  float* invstd;
  std::int64_t d;
  float eps;
  GPPF_HD void operator()(std::int64_t r) const {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    float s = 0.0f;
    for (std::int64_t j = Lanes::lane(); j < d; j += Lanes::kCount) s += to_f32(xr[j]);
    const float mu = Lanes::sum(s) / static_cast<float>(d);
    float q = 0.0f;
    for (std::int64_t j = Lanes::lane(); j < d; j += Lanes::kCount) {
      const float c = to_f32(xr[j]) - mu;
      q += c * c;
    }
    const float is = 1.0f / sqrtf(Lanes::sum(q) / static_cast<float>(d) + eps);
    for (std::int64_t j = Lanes::lane(); j < d; j += Lanes::kCount)
      yr[j] = from_f32<T>((to_f32(xr[j]) - mu) * is * gamma[j] + beta[j]);
    if (Lanes::lane() == 0) {
      mean[r] = mu;
      invstd[r] = is;
    }
  }
};

// dx = invstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma, xhat = (x - mean) * invstd.
template <class T, class Lanes>
struct LayerNormBwdDataRow {
  const T* x;
  const T* dy;
  T* dx;
  const float* gamma;
  const float* mean;
  const float* invstd;
  std::int64_t d;
  GPPF_HD void operator()(std::int64_t r) const {
    const T* xr = x + r * d;
    const T* dyr = dy + r * d;
    T* dxr = dx + r * d;
    const float mu = mean[r], is = invstd[r];
    float sg = 0.0f, sgx = 0.0f;
    for (std::int64_t j = Lanes::lane(); j < d; j += Lanes::kCount) {
      const float g = to_f32(dyr[j]) * gamma[j];
      sg += g;
      sgx += g * (to_f32(xr[j]) - mu) * is;
    }
    const float a = Lanes::sum(sg) / static_cast<float>(d), b = Lanes::sum(sgx) / static_cast<float>(d);
    for (std::int64_t j = Lanes::lane(); j < d; j += Lanes::kCount) {
      const float xhat = (to_f32(xr[j]) - mu) * is;
      dxr[j] = from_f32<T>(is * (to_f32(dyr[j]) * gamma[j] - a - xhat * b));
    }
  }
};

// The row functors over the tensors of layernorm_fwd / layernorm_bwd (host code of either backend).
template <class T, class Lanes>
LayerNormFwdRow<T, Lanes> layernorm_fwd_row(const LayerNormParams& p, const Tensor& x, const Tensor& gamma,
                                            const Tensor& beta, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  return {static_cast<const T*>(x.data()),
          static_cast<T*>(y.data()),
          gamma.data_as<float>(),
          beta.data_as<float>(),
          save_mean.data_as<float>(),
          save_invstd.data_as<float>(),
          x.dim(-1),
          p.eps};
}
template <class T, class Lanes>
LayerNormBwdDataRow<T, Lanes> layernorm_bwd_data_row(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                                     const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx) {
  return {static_cast<const T*>(x.data()),
          static_cast<const T*>(dy.data()),
          static_cast<T*>(dx.data()),
          gamma.data_as<float>(),
          save_mean.data_as<float>(),
          save_invstd.data_as<float>(),
          x.dim(-1)};
}

// Element i = r * d + j's terms of dgamma[j] (dy * xhat) and dbeta[j] (dy).
template <class T>
GPPF_HD GPPF_INLINE void layernorm_param_terms(const T* x, const T* dy, const float* mean, const float* invstd,
                                               std::int64_t r, std::int64_t i, float& dgamma, float& dbeta) {
  const float g = to_f32(dy[i]);
  dgamma += g * (to_f32(x[i]) - mean[r]) * invstd[r];
  dbeta += g;
}

// dgamma[j], dbeta[j] = the sums of `blocks` partials (part_g/part_b[b * d + j]), folded in order in
// f64, written or added to the old values.
struct LayerNormParamFold {
  const float* part_g;
  const float* part_b;
  std::int64_t blocks, d;
  float* dgamma;
  float* dbeta;
  bool accumulate;
  GPPF_HD void operator()(std::int64_t j) const {
    double sg = accumulate ? dgamma[j] : 0.0, sb = accumulate ? dbeta[j] : 0.0;
    for (std::int64_t b = 0; b < blocks; ++b) {
      sg += part_g[b * d + j];
      sb += part_b[b * d + j];
    }
    dgamma[j] = static_cast<float>(sg);
    dbeta[j] = static_cast<float>(sb);
  }
};

}  // namespace gppf::kernels
