#pragma once
// Learning-rate schedules: an optional linear warm-up, then constant, cosine decay to a floor, or
// step decay at milestones. lr_at(step) is a pure function of the step (0-based), so resuming from a
// checkpoint needs only the step count.
#include <cstdint>
#include <string>
#include <vector>

namespace gppf::optim {

struct ScheduleConfig {
  std::string type = "cosine";  // constant | cosine | step
  float base_lr = 0.1f;
  std::int64_t warmup_steps = 0;
  float warmup_start_factor = 0.0f;      // lr at step 0 is base_lr * this
  std::int64_t total_steps = 0;          // cosine: the step at which lr reaches min_lr
  float min_lr = 0.0f;                   // cosine floor
  std::vector<std::int64_t> milestones;  // step: lr *= gamma at each of these steps (ascending)
  float gamma = 0.1f;
};

class Schedule {
 public:
  // Throws gppf::Error naming the bad field (unknown type, cosine without total_steps > warmup_steps,
  // unsorted milestones, ...).
  explicit Schedule(const ScheduleConfig& config);
  float lr_at(std::int64_t step) const;
  const ScheduleConfig& config() const { return m_config; }

 private:
  enum class Kind { Constant, Cosine, Step };
  ScheduleConfig m_config;
  Kind m_kind;
};

}  // namespace gppf::optim
