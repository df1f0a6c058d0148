// gppf: one binary, one subcommand per interface in DESIGN.md.
#include <cstdio>
#include <string>
#include <vector>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/suggest.hpp"
#include "gppf/build_info.hpp"
#include "src/cli/commands.hpp"

namespace {

std::string version_text() {
  using namespace gppf::build;
  return gppf::str("gppf ", kVersion, " (git ", kGitSha, kGitDirty ? " with uncommitted changes" : "", ", ", kBuildType,
                   "; CUDA ", kCuda ? "on" : "off", ", oneDNN ", kOneDnn ? "on" : "off", ", HDF5 ",
                   kParallelHdf5 ? "parallel" : "serial", ")");
}

// The line printed for a gppf::Error: its reason, with the source location only when asked for.
std::string error_text(const gppf::Error& e, bool verbose) {
  if (verbose) return e.what();
  return e.rank() >= 0 ? gppf::str("[rank ", e.rank(), "] ", e.reason()) : e.reason();
}

// A usage error in one line, exit status 2 (CLI11's own codes, 105-109, mean nothing to a script).
int usage_error(const CLI::App& app, const std::string& sub, const std::string& what) {
  std::vector<std::string> names;
  for (const CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; })) names.push_back(s->get_name());
  bool known = false;
  for (const auto& n : names) known |= n == sub;
  if (!sub.empty() && sub[0] != '-' && !known) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    std::fprintf(stderr, "gppf: error: unknown command '%s'%s (commands: %s)\n", sub.c_str(),
                 gppf::printable(gppf::did_you_mean(sub, names)).c_str(), list.c_str());
    return 2;
  }
  const std::string cmd = known ? "gppf " + sub : std::string("gppf");
  std::fprintf(stderr, "%s: error: %s; see '%s --help'\n", cmd.c_str(), gppf::printable(what).c_str(), cmd.c_str());
  return 2;
}

std::string g_command_line;

}  // namespace

void gppf::cli::remember_command_line(int argc, char** argv) {
  g_command_line.clear();
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    const bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`") == std::string::npos;
    std::string quoted = "'";
    for (char c : a) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    g_command_line += (i ? " " : "") + (plain ? a : quoted + "'");
  }
}

const std::string& gppf::cli::command_line() { return g_command_line; }

void gppf::cli::add_data_root_option(CLI::App* cmd, std::string& data_root) {
  cmd->add_option("--data-root", data_root,
                  "folder that relative dataset paths in the config start from (default: the config file's folder)")
      ->check(CLI::ExistingDirectory);
}

int main(int argc, char** argv) {
  gppf::cli::remember_command_line(argc, argv);
  // Batch logs (Slurm, mpirun) should get progress lines as they happen, not in 4 KiB bursts.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  CLI::App app{
      "GPPF: general perception pre-training through sparsely activated multi-task learning.\n"
      "One network of lego layers; every task trains its own learned subset of legos in every step."};
  app.require_subcommand(1);
  app.set_version_flag("--version", version_text());
  std::string level = "info";
  app.add_option("--log-level", level, "debug, info, warn, error or off")->capture_default_str();
  bool verbose = false;
  app.add_flag("--verbose", verbose, "errors also name the source file and line that raised them");
  app.parse_complete_callback([&] { gppf::log::set_level(gppf::log::parse_level(level)); });

  gppf::cli::register_train(app);
  gppf::cli::register_eval(app);
  gppf::cli::register_finetune(app);
  gppf::cli::register_convert(app);
  gppf::cli::register_inspect(app);
  gppf::cli::register_bench(app);
  gppf::cli::register_report(app);
  gppf::cli::register_export(app);
  gppf::cli::register_predict(app);

  // Errors quote file contents and arguments: printable() keeps them one line without terminal codes.
  // The subcommand as typed (the first word that is no option or --log-level's value), for messages.
  std::string sub;
  for (int i = 1; i < argc && sub.empty(); ++i) {
    const std::string a = argv[i];
    if (a == "--log-level")
      ++i;
    else if (a.empty() || a[0] != '-')
      sub = gppf::printable(a);
  }
  const std::string prog = sub.empty() ? "gppf" : "gppf " + sub;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    return usage_error(app, sub, e.what());
  } catch (const gppf::NotImplemented& e) {
    std::fprintf(stderr, "%s: not built yet: %s\n", prog.c_str(), gppf::printable(e.reason()).c_str());
    return 2;
  } catch (const gppf::Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", prog.c_str(), gppf::printable(error_text(e, verbose)).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", prog.c_str(), gppf::printable(e.what()).c_str());
    return 1;
  }
  return 0;
}
