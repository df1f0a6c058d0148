#pragma once
// A trained network loaded for inference from a checkpoint (gppf eval, predict, export): the
// checkpoint's config, its tasks resolved against their data sets' manifests, and the weights and
// BN statistics it saved (re-calibrated by the trainer before it saved).
#include <memory>
#include <string>

#include "src/train/checkpoint.hpp"
#include "src/train/config.hpp"
#include "src/train/network.hpp"

namespace gppf::train {

struct LoadedModel {
  std::string path;  // the checkpoint file (a run directory resolved to its checkpoints/latest)
  CheckpointMeta meta;
  TrainConfig config;
  TaskData data;
  std::unique_ptr<Network> net;
  // The index of the task called `name`; throws, naming the checkpoint and the nearest task name,
  // when it has none. `command` prefixes the message ("predict").
  int task_index(const std::string& name, const std::string& command) const;
};

// `checkpoint`: a checkpoint file or a run directory. `device`: "host", "cuda[:N]" or empty (the
// device the checkpoint trained on); a bf16 GPU run loaded on the host runs in fp32 from its f32
// master weights. Errors name `command` ("eval: --device: ...").
LoadedModel load_model(const std::string& checkpoint, const std::string& device, const std::string& command);

}  // namespace gppf::train
