#pragma once
// The network of a config as a table: every layer's parameters and, per task, its output shape and
// forward FLOPs per sample on that task's path (k active legos). `gppf inspect CONFIG` prints it;
// docs/ARCHITECTURE.md quotes it for configs/mini.yaml.
#include <string>

#include "src/train/config.hpp"

namespace gppf::train {

// Opens the config's data sets (for image sizes and class counts) and builds the network.
std::string describe_network(const TrainConfig& config);

}  // namespace gppf::train
