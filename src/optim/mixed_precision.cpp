#include "src/optim/mixed_precision.hpp"

#include <algorithm>
#include <cmath>

#include "kernels/cast.hpp"
#include "src/optim/clip.hpp"

namespace gppf::optim {

void write_working_copy(const nn::Parameter& param, Tensor& working, const Stream& stream) {
  constexpr const char* op = "write_working_copy";
  check_dtype(op, param.name.c_str(), param.value, DType::F32);
  GPPF_CHECK(working.dtype() == DType::BF16 || working.dtype() == DType::F16, op, ": ", param.name,
             ": working copy must be bf16 or f16, got ", working.desc());
  check_shape(op, param.name.c_str(), working, param.value.shape());
  kernels::cast(param.value, working, stream);
}

LossScaler::LossScaler(const LossScalerConfig& config) : m_config(config), m_scale(config.init_scale) {
  GPPF_CHECK(config.init_scale > 0.0f && std::isfinite(config.init_scale),
             "loss scaler: init_scale must be positive and finite, got ", config.init_scale);
  GPPF_CHECK(config.growth_factor >= 1.0f, "loss scaler: growth_factor must be >= 1, got ", config.growth_factor);
  GPPF_CHECK(config.backoff_factor > 0.0f && config.backoff_factor < 1.0f,
             "loss scaler: backoff_factor must be in (0, 1), got ", config.backoff_factor);
  GPPF_CHECK(config.growth_interval >= 1, "loss scaler: growth_interval must be >= 1, got ", config.growth_interval);
  GPPF_CHECK(config.min_scale > 0.0f && config.min_scale <= config.max_scale,
             "loss scaler: need 0 < min_scale <= max_scale, got ", config.min_scale, " and ", config.max_scale);
}

bool LossScaler::update(bool overflow) {
  if (overflow) {
    m_scale = std::max(m_scale * m_config.backoff_factor, m_config.min_scale);
    m_clean_steps = 0;
    ++m_skipped_steps;
    return true;
  }
  if (++m_clean_steps >= m_config.growth_interval) {
    m_scale = std::min(m_scale * m_config.growth_factor, m_config.max_scale);
    m_clean_steps = 0;
  }
  return false;
}

void LossScaler::load_state(float scale, std::int64_t clean_steps) {
  GPPF_CHECK(scale > 0.0f && std::isfinite(scale), "loss scaler: loaded scale must be positive, got ", scale);
  GPPF_CHECK(clean_steps >= 0, "loss scaler: loaded clean-step count must be >= 0, got ", clean_steps);
  m_scale = scale;
  m_clean_steps = clean_steps;
}

bool LossScaler::grads_finite(const std::vector<nn::Parameter*>& params, const Stream& stream) {
  return std::isfinite(global_grad_norm(params, stream));
}

}  // namespace gppf::optim
