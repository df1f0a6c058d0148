#pragma once
// The network of a config as a table: every layer's parameters and, per task, its output shape and
// forward FLOPs per sample on that task's path (k active legos). `gppf inspect CONFIG` prints it;
// docs/ARCHITECTURE.md quotes it for configs/mini.yaml.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "src/train/config.hpp"

namespace gppf::train {

struct TaskSpec;
// Builds the network of `config` for tasks `specs` (image sizes and class counts: from the data sets'
// manifests, or synthetic_specs for a config whose data is not on this machine).
std::string describe_network(const TrainConfig& config, const std::vector<TaskSpec>& specs);
// The same as JSON (`gppf inspect CONFIG --json`): backbone, layers (name, out_channels, stride,
// lego_width, params, router_legos, mflop per task), tasks (input, classes, backbone and path MFLOP)
// and parameter counts.
nlohmann::json describe_network_json(const TrainConfig& config, const std::vector<TaskSpec>& specs);

}  // namespace gppf::train
