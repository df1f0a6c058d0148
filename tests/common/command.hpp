#pragma once
// Shell commands from tests (the gppf binary end to end): exit status and captured output.
#include <string>

namespace gppf::test {

struct CommandResult {
  int status = -1;  // exit status; 128 + N when killed by signal N; -1 when it could not start
  std::string output;
};

// Runs `cmd` with sh. `output` is stdout, and stderr too unless `stderr_to` names a file for it.
CommandResult run_command(const std::string& cmd, const std::string& stderr_to = "");

}  // namespace gppf::test
