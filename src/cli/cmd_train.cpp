#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "src/cli/commands.hpp"
#include "src/dist/mpi.hpp"
#include "src/train/config.hpp"
#include "src/train/trainer.hpp"

namespace gppf::cli {

void register_train(CLI::App& app) {
  struct Options {
    std::string config, out, resume, data_root;
    std::vector<std::string> overrides;
    bool force = false;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("train", "SIMT multi-task pre-training from a YAML config");
  cmd->add_option("--config", opts->config, "YAML config file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--set", opts->overrides, "override a config key: key=value (repeatable; tasks.NAME.key=value)");
  add_data_root_option(cmd, opts->data_root);
  cmd->add_option("--out", opts->out, "run directory (metrics.jsonl, summary.json, checkpoints/)")->required();
  cmd->add_option("--resume", opts->resume, "auto, or a checkpoint path");
  cmd->add_flag("--force", opts->force,
                "start over in a run directory that holds a previous run (its metrics, summary and checkpoints go)");
  cmd->callback([opts] {
    // Under mpirun or srun: one process of many (docs/SCALING.md). A plain launch stays MPI-free.
    std::unique_ptr<dist::MpiEnvironment> mpi = dist::start_mpi_for_launch();
    bool interrupted = false;
    try {
      const train::TrainConfig config = train::load_config(opts->config, opts->overrides, opts->data_root);
      train::TrainOptions o{opts->out, opts->resume};
      o.force = opts->force;
      o.command_line = command_line();
      interrupted = train::run_training(config, o).interrupted;
    } catch (const std::exception& e) {
      // The other ranks would wait for this one in their next collective: stop them all now.
      if (mpi && mpi->size() > 1) dist::abort_all(str("rank ", mpi->rank(), ": ", e.what()));
      throw;
    }
    if (interrupted) {
      std::fflush(stdout);
      mpi.reset();
      std::exit(train::kExitRequeue);  // checkpointed after a stop signal: "requeue me"
    }
  });
}

}  // namespace gppf::cli
