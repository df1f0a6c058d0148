#pragma once
// Each subcommand lives in its own cmd_<name>.cpp and registers itself on the app: its options, and
// a callback that does the work. Errors are exceptions; main() turns them into one line and a
// non-zero exit status.
#include <CLI/CLI.hpp>
#include <string>

namespace gppf::cli {

void register_train(CLI::App& app);
void register_eval(CLI::App& app);
void register_finetune(CLI::App& app);
void register_convert(CLI::App& app);
void register_inspect(CLI::App& app);
void register_bench(CLI::App& app);
void register_report(CLI::App& app);
void register_export(CLI::App& app);
void register_predict(CLI::App& app);

// The command line as typed (arguments with spaces or quotes quoted), kept by main() for run records.
void remember_command_line(int argc, char** argv);
const std::string& command_line();

// --data-root DIR: where relative dataset paths of a config file start (default: its folder).
void add_data_root_option(CLI::App* cmd, std::string& data_root);

}  // namespace gppf::cli
