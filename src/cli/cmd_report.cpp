#include <cstdio>
#include <memory>
#include <string>

#include "src/cli/commands.hpp"
#include "src/report/report.hpp"

namespace gppf::cli {

void register_report(CLI::App& app) {
  auto run_dir = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("report", "write RUN_DIR/report.html: curves, lego usage, throughput");
  cmd->add_option("run_dir", *run_dir, "run directory (the --out folder of gppf train)")->required();
  cmd->callback([run_dir] {
    const auto path = report::write_report(*run_dir);
    std::printf("%s\n", path.c_str());
  });
}

}  // namespace gppf::cli
