#include <memory>
#include <string>

#include "src/cli/commands.hpp"
#include "src/core/error.hpp"

namespace gppf::cli {

void register_inspect(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("inspect", "describe a data set or a checkpoint; non-zero exit when it is damaged");
  cmd->add_option("path", *path, "data set directory or checkpoint")->required();
  cmd->callback([path] { GPPF_NOT_IMPLEMENTED("inspect arrives with issue 4 (data sets) and issue 7 (checkpoints)"); });
}

}  // namespace gppf::cli
