#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/log.hpp"
#include "src/cli/commands.hpp"
#include "src/dist/mpi.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/config.hpp"
#include "src/train/finetune.hpp"

namespace gppf::cli {
namespace {

struct FinetuneArgs {
  std::string checkpoint, config, out, resume, data_root;
  std::vector<std::string> overrides;
  bool from_scratch = false;
  bool force = false;
};

// Returns true when a signal stopped the run after a checkpoint.
bool run(const FinetuneArgs& a) {
  const std::string path = train::resolve_checkpoint(a.checkpoint);
  const train::CheckpointMeta meta = train::read_checkpoint_meta(path);
  const train::TrainConfig config =
      train::load_finetune_config(a.config, a.overrides, meta.config_yaml, path + ":/config", a.data_root);
  train::FinetuneOptions fo;
  fo.checkpoint = path;
  fo.run_dir = a.out;
  fo.from_scratch = a.from_scratch;
  fo.resume = a.resume;
  fo.force = a.force;
  fo.command_line = command_line();
  return train::run_finetune(config, fo).interrupted();
}

}  // namespace

void register_finetune(CLI::App& app) {
  auto opts = std::make_shared<FinetuneArgs>();
  auto* cmd = app.add_subcommand("finetune", "transfer a pre-trained network to a new task (docs/FINETUNE.md)");
  cmd->add_option("--checkpoint", opts->checkpoint, "pre-trained checkpoint file or run directory (its latest)")
      ->required();
  cmd->add_option("--config", opts->config, "YAML config of the new tasks (the model comes from the checkpoint)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--set", opts->overrides, "override a config key: key=value (repeatable; tasks.NAME.key=value)");
  add_data_root_option(cmd, opts->data_root);
  cmd->add_option("--out", opts->out, "run directory (probe/, metrics.jsonl, summary.json, checkpoints/)")->required();
  cmd->add_option("--resume", opts->resume,
                  "auto: continue an interrupted run in --out (a finished probe is not run again)")
      ->check(CLI::IsMember({"auto"}));
  cmd->add_flag("--force", opts->force, "start over in a run directory that holds a previous run");
  cmd->add_flag("--from-scratch", opts->from_scratch,
                "train the same network from random initialisation for probe_steps + steps (the baseline)");
  cmd->callback([opts] {
    // Under mpirun or srun both phases run distributed as `gppf train` does (docs/SCALING.md).
    std::unique_ptr<dist::MpiEnvironment> mpi = dist::start_mpi_for_launch();
    bool interrupted = false;
    try {
      interrupted = run(*opts);
    } catch (const std::exception& e) {
      if (mpi && mpi->size() > 1) dist::abort_all(str("rank ", mpi->rank(), ": ", e.what()));
      throw;
    }
    if (interrupted) {
      log::info("finetune stopped by a signal after a checkpoint; the same command with --resume auto continues it");
      std::fflush(stdout);
      mpi.reset();
      std::exit(train::kExitRequeue);
    }
  });
}

}  // namespace gppf::cli
