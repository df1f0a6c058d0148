#include "tests/common/command.hpp"

#include <sys/wait.h>

#include <array>
#include <cstdio>

namespace gppf::test {

CommandResult run_command(const std::string& cmd, const std::string& stderr_to) {
  CommandResult r;
  const std::string full = cmd + (stderr_to.empty() ? std::string(" 2>&1") : " 2>" + stderr_to);
  FILE* pipe = popen(full.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  while (fgets(buf.data(), buf.size(), pipe)) r.output += buf.data();
  const int st = pclose(pipe);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  return r;
}

}  // namespace gppf::test
