#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "src/cli/commands.hpp"
#include "src/dist/mpi.hpp"
#include "src/train/bench_comm.hpp"
#include "src/train/bench_step.hpp"

namespace gppf::cli {

void register_bench(CLI::App& app) {
  struct Options {
    std::string what, config, synthetic, data_root;
    std::vector<std::string> overrides;
    int steps = 20, warmup = 3;
    double step_ms = 64.5;
    int images_per_gpu = 256;
    bool json = false;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("bench", "whole-step benchmarks (kernel benchmarks live in bench/)");
  cmd->add_option("what", opts->what, "step or comm")->required()->check(CLI::IsMember({"step", "comm"}));
  cmd->add_option("--config", opts->config, "YAML config file")->check(CLI::ExistingFile);
  cmd->add_option("--set", opts->overrides, "override a config key: key=value (repeatable)");
  add_data_root_option(cmd, opts->data_root);
  cmd->add_option("--steps", opts->steps, "timed steps")->capture_default_str();
  cmd->add_option("--warmup", opts->warmup, "untimed steps first")->capture_default_str();
  cmd->add_option("--synthetic", opts->synthetic,
                  "step: random data of shape HxWxC[:CLASSES] for every task instead of its data set (224x224x3:1000)");
  cmd->add_flag("--json", opts->json, "print JSON instead of a table");
  cmd->add_option("--step-ms", opts->step_ms, "comm: GPU compute time of one step, for the scaling model")
      ->capture_default_str();
  cmd->add_option("--images-per-gpu", opts->images_per_gpu, "comm: images per GPU and step at --step-ms")
      ->capture_default_str();
  cmd->callback([opts] {
    GPPF_CHECK(!opts->config.empty(), "bench ", opts->what, ": --config FILE is required");
    if (opts->what == "comm") {
      std::unique_ptr<dist::MpiEnvironment> mpi = dist::start_mpi_for_launch();
      train::CommBenchOptions co;
      co.json = opts->json;
      co.step_ms = opts->step_ms;
      co.images_per_gpu = opts->images_per_gpu;
      const std::string text =
          train::bench_comm(train::load_config(opts->config, opts->overrides, opts->data_root), co);
      if (!mpi || mpi->rank() == 0) std::fputs(text.c_str(), stdout);
      return;
    }
    train::SyntheticData synthetic;
    if (!opts->synthetic.empty()) synthetic = train::parse_synthetic(opts->synthetic);
    const auto result = train::bench_step(train::load_config(opts->config, opts->overrides, opts->data_root),
                                          opts->warmup, opts->steps, opts->synthetic.empty() ? nullptr : &synthetic);
    std::fputs((opts->json ? result.to_json() + "\n" : result.to_table()).c_str(), stdout);
  });
}

}  // namespace gppf::cli
