#include <memory>
#include <string>

#include "src/cli/commands.hpp"
#include "src/core/error.hpp"

namespace gppf::cli {

void register_bench(CLI::App& app) {
  struct Options {
    std::string what, config;
    bool json = false;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("bench", "whole-step benchmarks (kernel benchmarks live in bench/)");
  cmd->add_option("what", opts->what, "step or comm")->required()->check(CLI::IsMember({"step", "comm"}));
  cmd->add_option("--config", opts->config, "YAML config file");
  cmd->add_flag("--json", opts->json, "print JSON instead of a table");
  cmd->callback([opts] {
    if (opts->what == "step") GPPF_NOT_IMPLEMENTED("bench step arrives with issue 5 (the SIMT training step)");
    GPPF_NOT_IMPLEMENTED("bench comm arrives with issue 6 (distributed SIMT)");
  });
}

}  // namespace gppf::cli
