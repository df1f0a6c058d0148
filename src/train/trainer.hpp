#pragma once
// The SIMT training loop (DESIGN.md): every step takes a micro-batch from every participating task,
// runs that task's path forward and backward (gradients accumulate), adds the routing regulariser,
// and takes one optimizer step. Writes RUN_DIR/metrics.jsonl and RUN_DIR/summary.json.
#include <map>
#include <string>

#include "src/train/config.hpp"

namespace gppf::train {

struct TrainSummary {
  std::int64_t steps = 0;
  double wall_seconds = 0;
  std::map<std::string, std::map<std::string, double>> metrics;  // task -> metric -> value (test split)
};

struct TrainOptions {
  std::string run_dir;
  std::string resume;  // "", "auto" or a checkpoint path
};

TrainSummary run_training(const TrainConfig& config, const TrainOptions& options);

}  // namespace gppf::train
