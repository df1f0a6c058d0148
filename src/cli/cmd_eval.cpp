#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/suggest.hpp"
#include "src/cli/commands.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/config.hpp"
#include "src/train/network.hpp"
#include "src/train/trainer.hpp"

namespace gppf::cli {

void register_eval(CLI::App& app) {
  struct Options {
    std::string checkpoint, task, split = "test", device;
    bool json = false;
    std::int64_t max_batches = 0;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("eval", "evaluate a checkpoint on the test split of its tasks");
  cmd->add_option("--checkpoint", opts->checkpoint, "checkpoint file or run directory (its checkpoints/latest)")
      ->required();
  cmd->add_option("--task", opts->task, "evaluate only this task");
  cmd->add_option("--split", opts->split, "data set split")->capture_default_str();
  cmd->add_option("--device", opts->device, "host or cuda[:N] (default: the device the checkpoint trained on)");
  cmd->add_option("--max-batches", opts->max_batches,
                  "at most N batches per task (0: the whole split); for a quick look")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--json", opts->json, "print the metrics as JSON (task -> metric -> value) instead of a table");
  cmd->callback([opts] {
    const std::string path = train::resolve_checkpoint(opts->checkpoint);
    const train::CheckpointMeta meta = train::read_checkpoint_meta(path);
    std::vector<std::string> overrides;
    if (!opts->device.empty()) {
      Device device;
      try {
        device = Device::parse(opts->device);
      } catch (const Error& e) {
        GPPF_THROW("eval: --device: ", e.reason());
      }
      overrides.push_back("device=" + device.str());
      // A bf16 GPU run evaluated on the host: its f32 master weights, in f32.
      if (device.is_host()) overrides.push_back("precision=fp32");
    }
    const train::TrainConfig config = train::parse_config(meta.config_yaml, overrides, path + ":/config");
    std::vector<std::string> names;
    for (const auto& t : config.tasks) names.push_back(t.name);
    GPPF_CHECK(opts->task.empty() || std::find(names.begin(), names.end(), opts->task) != names.end(),
               "eval: checkpoint ", path, " has no task '", opts->task, "'", did_you_mean(opts->task, names));
    if (config.threads > 0) omp_set_num_threads(config.threads);
    const auto [datasets, specs] = train::open_tasks(config);
    train::Network net(config, specs);
    // The BN statistics are the checkpoint's (re-calibrated by the trainer before it saved).
    (void)train::read_checkpoint(path, {net.parameters(), net.buffers(), {}}, {true, false});
    nlohmann::json out = nlohmann::json::object();
    if (!opts->json) std::printf("%-20s %-15s %-10s %s\n", "task", "type", "metric", opts->split.c_str());
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const auto& spec = specs[i];
      if (!opts->task.empty() && spec.config.name != opts->task) continue;
      const auto m =
          train::evaluate_task(net, static_cast<int>(i), datasets[i], config, opts->split, opts->max_batches);
      for (const auto& [k, v] : m) {
        out[spec.config.name][k] = v;
        if (!opts->json)
          std::printf("%-20s %-15s %-10s %.4f\n", spec.config.name.c_str(), io::task_name(spec.config.type), k.c_str(),
                      v);
      }
    }
    if (opts->json) std::printf("%s\n", out.dump(2).c_str());
    log::info(
        "evaluated ", path, " (step ", meta.step, ") on ",
        opts->max_batches > 0 ? str("at most ", opts->max_batches, " batches per task of ") : std::string("all of "),
        "split ", opts->split);
  });
}

}  // namespace gppf::cli
