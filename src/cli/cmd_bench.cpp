#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "src/cli/commands.hpp"
#include "src/core/error.hpp"
#include "src/train/bench_step.hpp"

namespace gppf::cli {

void register_bench(CLI::App& app) {
  struct Options {
    std::string what, config;
    std::vector<std::string> overrides;
    int steps = 20, warmup = 3;
    bool json = false;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("bench", "whole-step benchmarks (kernel benchmarks live in bench/)");
  cmd->add_option("what", opts->what, "step or comm")->required()->check(CLI::IsMember({"step", "comm"}));
  cmd->add_option("--config", opts->config, "YAML config file")->check(CLI::ExistingFile);
  cmd->add_option("--set", opts->overrides, "override a config key: key=value (repeatable)");
  cmd->add_option("--steps", opts->steps, "timed steps")->capture_default_str();
  cmd->add_option("--warmup", opts->warmup, "untimed steps first")->capture_default_str();
  cmd->add_flag("--json", opts->json, "print JSON instead of a table");
  cmd->callback([opts] {
    if (opts->what == "comm") GPPF_NOT_IMPLEMENTED("bench comm arrives with issue 6 (distributed SIMT)");
    GPPF_CHECK(!opts->config.empty(), "bench step: --config FILE is required");
    const auto result = train::bench_step(train::load_config(opts->config, opts->overrides), opts->warmup, opts->steps);
    std::fputs((opts->json ? result.to_json() + "\n" : result.to_table()).c_str(), stdout);
  });
}

}  // namespace gppf::cli
