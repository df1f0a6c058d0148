// gppf: one binary, one subcommand per interface in DESIGN.md.
#include <cstdio>
#include <string>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "gppf/build_info.hpp"
#include "src/cli/commands.hpp"

namespace {

std::string version_text() {
  using namespace gppf::build;
  return gppf::str("gppf ", kVersion, " (git ", kGitSha, ", ", kBuildType, "; CUDA ", kCuda ? "on" : "off", ", oneDNN ",
                   kOneDnn ? "on" : "off", ", HDF5 ", kParallelHdf5 ? "parallel" : "serial", ")");
}

}  // namespace

int main(int argc, char** argv) {
  // Batch logs (Slurm, mpirun) should get progress lines as they happen, not in 4 KiB bursts.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  CLI::App app{
      "GPPF: general perception pre-training through sparsely activated multi-task learning.\n"
      "One network of lego layers; every task trains its own learned subset of legos in every step."};
  app.require_subcommand(1);
  app.set_version_flag("--version", version_text());
  std::string level = "info";
  app.add_option("--log-level", level, "debug, info, warn, error or off")->capture_default_str();
  app.parse_complete_callback([&] { gppf::log::set_level(gppf::log::parse_level(level)); });

  gppf::cli::register_train(app);
  gppf::cli::register_eval(app);
  gppf::cli::register_finetune(app);
  gppf::cli::register_convert(app);
  gppf::cli::register_inspect(app);
  gppf::cli::register_bench(app);
  gppf::cli::register_report(app);

  // Errors quote file contents and arguments: printable() keeps them one line without terminal codes.
  const std::string sub = gppf::printable(argc > 1 ? argv[1] : "");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const gppf::NotImplemented& e) {
    std::fprintf(stderr, "gppf %s: not built yet: %s\n", sub.c_str(), gppf::printable(e.reason()).c_str());
    return 2;
  } catch (const gppf::Error& e) {
    std::fprintf(stderr, "gppf %s: error: %s\n", sub.c_str(), gppf::printable(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gppf %s: error: %s\n", sub.c_str(), gppf::printable(e.what()).c_str());
    return 1;
  }
  return 0;
}
