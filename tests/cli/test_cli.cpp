// The binary's contract (DESIGN.md): --help, --version, exit 0 on success, non-zero with a one-line
// reason otherwise, and never a made-up result from a subcommand that is not built.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace {

struct CommandResult {
  int status = -1;
  std::string output;
};

CommandResult run(const std::string& args) {
  CommandResult r;
  const std::string cmd = std::string(GPPF_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  while (fgets(buf.data(), buf.size(), pipe)) r.output += buf.data();
  const int st = pclose(pipe);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(Cli, HelpListsEverySubcommand) {
  const CommandResult r = run("--help");
  EXPECT_EQ(r.status, 0);
  for (const char* sub : {"train", "eval", "finetune", "convert", "inspect", "bench", "report"})
    EXPECT_NE(r.output.find(sub), std::string::npos) << sub << " missing from:\n" << r.output;
}

TEST(Cli, Version) {
  const CommandResult r = run("--version");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.output.rfind("gppf ", 0), 0u) << r.output;
}

TEST(Cli, EverySubcommandHasHelp) {
  for (const char* sub : {"train", "eval", "finetune", "convert", "inspect", "bench", "report"}) {
    const CommandResult r = run(std::string(sub) + " --help");
    EXPECT_EQ(r.status, 0) << sub;
    EXPECT_NE(r.output.find("Usage"), std::string::npos) << sub;
  }
}

TEST(Cli, BadArgumentsFailWithAReason) {
  CommandResult r = run("no-such-command");
  EXPECT_NE(r.status, 0);
  r = run("train --out /tmp/x");  // --config missing
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--config"), std::string::npos) << r.output;
  r = run("convert --format tiff --out /tmp/x");
  EXPECT_NE(r.status, 0);
}

}  // namespace
