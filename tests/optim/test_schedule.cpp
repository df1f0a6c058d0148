#include <gtest/gtest.h>

#include <cmath>

#include "core/error.hpp"
#include "src/optim/schedule.hpp"

namespace gppf {
namespace {

using optim::Schedule;
using optim::ScheduleConfig;

TEST(Schedule, CosineWithWarmupAtKeySteps) {
  ScheduleConfig c;
  c.type = "cosine";
  c.base_lr = 0.1f;
  c.warmup_steps = 10;
  c.warmup_start_factor = 0.0f;
  c.total_steps = 110;
  c.min_lr = 0.001f;
  const Schedule s(c);
  EXPECT_FLOAT_EQ(s.lr_at(0), 0.0f);
  EXPECT_FLOAT_EQ(s.lr_at(5), 0.05f);
  EXPECT_FLOAT_EQ(s.lr_at(9), 0.09f);
  EXPECT_FLOAT_EQ(s.lr_at(10), 0.1f);                    // warm-up end = cosine start
  EXPECT_FLOAT_EQ(s.lr_at(60), 0.001f + 0.099f * 0.5f);  // cosine midpoint
  EXPECT_FLOAT_EQ(s.lr_at(35), 0.001f + 0.099f * 0.5f * (1.0f + std::cos(3.14159265f / 4)));
  EXPECT_FLOAT_EQ(s.lr_at(110), 0.001f);  // floor
  EXPECT_FLOAT_EQ(s.lr_at(100000), 0.001f);
  EXPECT_FLOAT_EQ(s.lr_at(-3), 0.0f);
  for (std::int64_t t = 11; t <= 110; ++t) EXPECT_LE(s.lr_at(t), s.lr_at(t - 1)) << t;
}

TEST(Schedule, WarmupStartFactor) {
  ScheduleConfig c;
  c.type = "constant";
  c.base_lr = 2.0f;
  c.warmup_steps = 4;
  c.warmup_start_factor = 0.5f;
  const Schedule s(c);
  EXPECT_FLOAT_EQ(s.lr_at(0), 1.0f);
  EXPECT_FLOAT_EQ(s.lr_at(2), 1.5f);
  EXPECT_FLOAT_EQ(s.lr_at(4), 2.0f);
  EXPECT_FLOAT_EQ(s.lr_at(1000), 2.0f);
}

TEST(Schedule, StepDecayAtMilestones) {
  ScheduleConfig c;
  c.type = "step";
  c.base_lr = 0.1f;
  c.milestones = {30, 60, 90};
  c.gamma = 0.1f;
  const Schedule s(c);
  EXPECT_FLOAT_EQ(s.lr_at(0), 0.1f);
  EXPECT_FLOAT_EQ(s.lr_at(29), 0.1f);
  EXPECT_FLOAT_EQ(s.lr_at(30), 0.01f);
  EXPECT_FLOAT_EQ(s.lr_at(59), 0.01f);
  EXPECT_FLOAT_EQ(s.lr_at(60), 0.001f);
  EXPECT_FLOAT_EQ(s.lr_at(95), 0.0001f);
}

TEST(Schedule, ConstantIsConstant) {
  ScheduleConfig c;
  c.type = "constant";
  c.base_lr = 0.3f;
  const Schedule s(c);
  EXPECT_FLOAT_EQ(s.lr_at(0), 0.3f);
  EXPECT_FLOAT_EQ(s.lr_at(123456), 0.3f);
}

TEST(Schedule, BadConfigsThrowNamingTheField) {
  ScheduleConfig c;
  c.type = "exponential";
  try {
    Schedule s(c);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exponential"), std::string::npos);
  }
  c = {};
  c.total_steps = 5;
  c.warmup_steps = 5;
  EXPECT_THROW(Schedule{c}, Error);
  c = {};
  c.type = "step";
  c.milestones = {10, 5};
  EXPECT_THROW(Schedule{c}, Error);
  c = {};
  c.total_steps = 100;
  c.min_lr = 1.0f;
  EXPECT_THROW(Schedule{c}, Error);
}

}  // namespace
}  // namespace gppf
