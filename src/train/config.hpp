#pragma once
// The training configuration: a YAML file, every key overridable with `--set key=value` (dotted
// paths; list entries of `tasks` are addressed by their name: `tasks.mnist.batch_size=32`). Unknown
// keys, wrong types and impossible values are one-line errors naming the key.
#include <cstdint>
#include <string>
#include <vector>

#include "io/augment.hpp"
#include "io/dataset.hpp"
#include "src/nn/backbone.hpp"
#include "src/nn/heads.hpp"
#include "src/optim/optimizer.hpp"
#include "src/optim/schedule.hpp"

namespace gppf::train {

struct TaskConfig {
  std::string name;
  io::TaskType type = io::TaskType::Classification;
  std::string dataset;
  int batch_size = 32;
  float loss_weight = 1.0f;
  // Relative frequency with which the task takes part in a step (1: every step).
  float sampling_weight = 1.0f;
  io::AugmentConfig augment;  // enabled when any key of `augment:` is given
  // Detection: top detections kept per image, and the heat-map Gaussian radius factor.
  int max_detections = 20;
};

struct TrainConfig {
  std::string config_path;
  // The effective config as YAML text (after --set overrides, data set paths made absolute): what a
  // checkpoint stores, so that `gppf eval` and resumed runs rebuild exactly this network.
  std::string yaml;
  std::uint64_t seed = 1;
  std::int64_t steps = 1000;
  std::string device = "host";
  int threads = 0;  // OpenMP threads; 0: the runtime's default
  std::int64_t log_every = 50;
  std::int64_t eval_every = 0;    // 0: only at the end
  std::int64_t eval_batches = 0;  // 0: the whole split
  std::string eval_split = "test";
  // Training batches per task over which BN statistics are re-estimated before each evaluation.
  int bn_calibration_batches = 10;
  int loader_workers = 1;
  std::int64_t checkpoint_every = 0;  // steps between checkpoints; 0: only the final one
  int keep_checkpoints = 3;           // newest checkpoint files kept in RUN_DIR/checkpoints
  double checkpoint_minutes = 0;      // also checkpoint when this much wall time passed since the last; 0: off
  optim::OptimizerConfig optimizer;
  optim::ScheduleConfig schedule;
  nn::BackboneSpec backbone;
  nn::NeckSpec neck;
  std::vector<TaskConfig> tasks;
};

// Parses `path` after applying `overrides` ("key=value"). Dataset paths are resolved relative to
// the current directory.
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides);
// Same, from YAML text (tests).
TrainConfig parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                         const std::string& where);

}  // namespace gppf::train
