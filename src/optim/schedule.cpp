#include "src/optim/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.hpp"

namespace gppf::optim {

Schedule::Schedule(const ScheduleConfig& config) : m_config(config) {
  if (config.type == "constant")
    m_kind = Kind::Constant;
  else if (config.type == "cosine")
    m_kind = Kind::Cosine;
  else if (config.type == "step")
    m_kind = Kind::Step;
  else
    GPPF_THROW("schedule: unknown type '", config.type, "' (expected constant, cosine or step)");
  GPPF_CHECK(config.base_lr >= 0.0f, "schedule: base_lr must be >= 0, got ", config.base_lr);
  GPPF_CHECK(config.warmup_steps >= 0, "schedule: warmup_steps must be >= 0, got ", config.warmup_steps);
  GPPF_CHECK(config.warmup_start_factor >= 0.0f && config.warmup_start_factor <= 1.0f,
             "schedule: warmup_start_factor must be in [0, 1], got ", config.warmup_start_factor);
  if (m_kind == Kind::Cosine) {
    GPPF_CHECK(config.total_steps > config.warmup_steps, "schedule: cosine needs total_steps (", config.total_steps,
               ") > warmup_steps (", config.warmup_steps, ")");
    GPPF_CHECK(config.min_lr >= 0.0f && config.min_lr <= config.base_lr,
               "schedule: min_lr must be in [0, base_lr=", config.base_lr, "], got ", config.min_lr);
  }
  if (m_kind == Kind::Step) {
    GPPF_CHECK(std::is_sorted(config.milestones.begin(), config.milestones.end()),
               "schedule: milestones must be in ascending order");
    GPPF_CHECK(config.gamma > 0.0f, "schedule: gamma must be > 0, got ", config.gamma);
  }
}

float Schedule::lr_at(std::int64_t step) const {
  const ScheduleConfig& c = m_config;
  const double base = c.base_lr;
  step = std::max<std::int64_t>(step, 0);
  if (step < c.warmup_steps) {
    const double f = c.warmup_start_factor;
    return static_cast<float>(base * (f + (1.0 - f) * static_cast<double>(step) / static_cast<double>(c.warmup_steps)));
  }
  switch (m_kind) {
    case Kind::Constant: return c.base_lr;
    case Kind::Cosine: {
      if (step >= c.total_steps) return c.min_lr;
      const double t = static_cast<double>(step - c.warmup_steps) / static_cast<double>(c.total_steps - c.warmup_steps);
      return static_cast<float>(c.min_lr + (base - c.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * t)));
    }
    case Kind::Step: {
      const auto passed = std::upper_bound(c.milestones.begin(), c.milestones.end(), step) - c.milestones.begin();
      return static_cast<float>(base * std::pow(static_cast<double>(c.gamma), static_cast<double>(passed)));
    }
  }
  return c.base_lr;
}

}  // namespace gppf::optim
