#include <memory>
#include <string>

#include "src/cli/commands.hpp"
#include "src/core/error.hpp"

namespace gppf::cli {

void register_report(CLI::App& app) {
  auto run_dir = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("report", "write RUN_DIR/report.html: curves, lego usage, throughput");
  cmd->add_option("run_dir", *run_dir, "run directory")->required();
  cmd->callback([run_dir] { GPPF_NOT_IMPLEMENTED("reports arrive with issue 5 (the GPPF network)"); });
}

}  // namespace gppf::cli
