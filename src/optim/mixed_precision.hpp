#pragma once
// Mixed precision: fp32 master weights and optimizer state (nn::Parameter::value), a bf16 or f16
// working copy written after each update for the forward pass, and dynamic loss scaling for f16.
#include <cstdint>
#include <vector>

#include "core/tensor.hpp"
#include "src/nn/parameter.hpp"

namespace gppf::optim {

// Writes param.value (f32) into `working` (bf16 or f16, same numel and device), rounding to nearest
// even; ordered on `stream`.
void write_working_copy(const nn::Parameter& param, Tensor& working, const Stream& stream = Stream::host());

struct LossScalerConfig {
  float init_scale = 65536.0f;  // 2^16
  float growth_factor = 2.0f;
  float backoff_factor = 0.5f;
  std::int64_t growth_interval = 2000;  // clean steps in a row before the scale grows
  float min_scale = 1.0f;
  float max_scale = 16777216.0f;  // 2^24
};

// Dynamic loss scaling (Micikevicius et al. 2018, as torch.cuda.amp.GradScaler). The loss (or the
// seed gradient) is multiplied by scale(); the optimizer divides the gradients by it inside its
// update and calls update() with whether any gradient was inf/NaN. On overflow the step is skipped
// and the scale backs off; after growth_interval clean steps in a row it grows.
class LossScaler {
 public:
  explicit LossScaler(const LossScalerConfig& config = {});

  float scale() const { return m_scale; }
  // Records one step's outcome and adjusts the scale; returns true when the step must be skipped.
  bool update(bool overflow);
  std::int64_t clean_steps() const { return m_clean_steps; }
  std::int64_t skipped_steps() const { return m_skipped_steps; }
  const LossScalerConfig& config() const { return m_config; }
  // Restores the state saved in a checkpoint.
  void load_state(float scale, std::int64_t clean_steps);

  // True when every touched, trainable parameter's gradient is finite; one reduction per tensor and
  // one synchronisation (the optimizers get this from their gradient-norm pass instead).
  static bool grads_finite(const std::vector<nn::Parameter*>& params, const Stream& stream = Stream::host());

 private:
  LossScalerConfig m_config;
  float m_scale;
  std::int64_t m_clean_steps = 0;
  std::int64_t m_skipped_steps = 0;
};

}  // namespace gppf::optim
