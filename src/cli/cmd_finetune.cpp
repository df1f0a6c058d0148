#include <memory>
#include <string>

#include "src/cli/commands.hpp"
#include "src/core/error.hpp"

namespace gppf::cli {

void register_finetune(CLI::App& app) {
  struct Options {
    std::string checkpoint, config, out;
    bool from_scratch = false;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("finetune", "transfer a pre-trained network to a new task");
  cmd->add_option("--checkpoint", opts->checkpoint, "pre-trained checkpoint")->required();
  cmd->add_option("--config", opts->config, "YAML config of the new task")->required()->check(CLI::ExistingFile);
  cmd->add_option("--out", opts->out, "run directory")->required();
  cmd->add_flag("--from-scratch", opts->from_scratch, "train the same network from random initialisation");
  cmd->callback([opts] { GPPF_NOT_IMPLEMENTED("transfer arrives with issue 5 (the GPPF network)"); });
}

}  // namespace gppf::cli
