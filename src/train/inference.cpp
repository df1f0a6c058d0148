#include "src/train/inference.hpp"

#include <algorithm>

#include "core/device.hpp"
#include "core/error.hpp"
#include "core/suggest.hpp"

namespace gppf::train {

int LoadedModel::task_index(const std::string& name, const std::string& command) const {
  std::vector<std::string> names;
  for (const auto& t : config.tasks) names.push_back(t.name);
  const auto it = std::find(names.begin(), names.end(), name);
  GPPF_CHECK(it != names.end(), command, ": checkpoint ", path, " has no task '", name, "'", did_you_mean(name, names));
  return static_cast<int>(it - names.begin());
}

LoadedModel load_model(const std::string& checkpoint, const std::string& device, const std::string& command) {
  LoadedModel m;
  m.path = resolve_checkpoint(checkpoint);
  m.meta = read_checkpoint_meta(m.path);
  std::vector<std::string> overrides;
  if (!device.empty()) {
    Device d;
    try {
      d = Device::parse(device);
    } catch (const Error& e) {
      GPPF_THROW(command, ": --device: ", e.reason());
    }
    overrides.push_back("device=" + d.str());
    if (d.is_host()) overrides.push_back("precision=fp32");
  }
  m.config = parse_config(m.meta.config_yaml, overrides, m.path + ":/config");
  m.data = open_tasks(m.config);
  m.net = std::make_unique<Network>(m.config, m.data.specs);
  (void)read_checkpoint(m.path, {m.net->parameters(), m.net->buffers(), {}}, {true, false});
  m.net->parameters_changed();
  return m;
}

}  // namespace gppf::train
