#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "src/cli/commands.hpp"
#include "src/core/log.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/config.hpp"
#include "src/train/finetune.hpp"

namespace gppf::cli {

void register_finetune(CLI::App& app) {
  struct Options {
    std::string checkpoint, config, out, resume;
    std::vector<std::string> overrides;
    bool from_scratch = false;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("finetune", "transfer a pre-trained network to a new task (docs/FINETUNE.md)");
  cmd->add_option("--checkpoint", opts->checkpoint, "pre-trained checkpoint file or run directory (its latest)")
      ->required();
  cmd->add_option("--config", opts->config, "YAML config of the new tasks (the model comes from the checkpoint)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--set", opts->overrides, "override a config key: key=value (repeatable; tasks.NAME.key=value)");
  cmd->add_option("--out", opts->out, "run directory (probe/, metrics.jsonl, summary.json, checkpoints/)")->required();
  cmd->add_option("--resume", opts->resume,
                  "auto: continue an interrupted run in --out (a finished probe is not run again)")
      ->check(CLI::IsMember({"auto"}));
  cmd->add_flag("--from-scratch", opts->from_scratch,
                "train the same network from random initialisation for probe_steps + steps (the baseline)");
  cmd->callback([opts] {
    const std::string path = train::resolve_checkpoint(opts->checkpoint);
    const train::CheckpointMeta meta = train::read_checkpoint_meta(path);
    const train::TrainConfig config =
        train::load_finetune_config(opts->config, opts->overrides, meta.config_yaml, path + ":/config");
    train::FinetuneOptions fo;
    fo.checkpoint = path;
    fo.run_dir = opts->out;
    fo.from_scratch = opts->from_scratch;
    fo.resume = opts->resume;
    if (train::run_finetune(config, fo).interrupted()) {
      log::info("finetune stopped by a signal after a checkpoint; the same command with --resume auto continues it");
      std::fflush(stdout);
      std::exit(train::kExitRequeue);
    }
  });
}

}  // namespace gppf::cli
