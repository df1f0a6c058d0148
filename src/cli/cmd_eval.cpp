#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.hpp"
#include "core/log.hpp"
#include "src/cli/commands.hpp"
#include "src/train/inference.hpp"
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
    train::LoadedModel model = train::load_model(opts->checkpoint, opts->device, "eval");
    if (!opts->task.empty()) (void)model.task_index(opts->task, "eval");
    const train::TrainConfig& config = model.config;
    const auto& [datasets, specs] = model.data;
    train::Network& net = *model.net;
    const std::string& path = model.path;
    if (config.threads > 0) omp_set_num_threads(config.threads);
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
        "evaluated ", path, " (step ", model.meta.step, ") on ",
        opts->max_batches > 0 ? str("at most ", opts->max_batches, " batches per task of ") : std::string("all of "),
        "split ", opts->split);
  });
}

}  // namespace gppf::cli
