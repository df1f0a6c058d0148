#include <memory>
#include <string>

#include "src/cli/commands.hpp"
#include "src/core/error.hpp"

namespace gppf::cli {

void register_eval(CLI::App& app) {
  struct Options {
    std::string checkpoint, task;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("eval", "evaluate a checkpoint on the test split of its tasks");
  cmd->add_option("--checkpoint", opts->checkpoint, "checkpoint file or run directory")->required();
  cmd->add_option("--task", opts->task, "evaluate only this task");
  cmd->callback([opts] { GPPF_NOT_IMPLEMENTED("evaluation arrives with issue 5 (the GPPF network)"); });
}

}  // namespace gppf::cli
