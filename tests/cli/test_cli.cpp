// The binary's contract (DESIGN.md): --help, --version, exit 0 on success, non-zero with a one-line
// reason otherwise, and never a made-up result from a subcommand that is not built.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/common/datasets.hpp"
#include "tests/common/files.hpp"

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

// A scratch folder per test, removed afterwards.
struct Scratch {
  std::filesystem::path dir;
  explicit Scratch(const std::string& name)
      : dir(std::filesystem::temp_directory_path() / ("gppf-cli-" + name + "-" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  ~Scratch() { std::filesystem::remove_all(dir); }
};

// `gppf inspect` of a data set with nothing in it, or a split without samples, must not say "fine".
TEST(Cli, InspectFailsOnAnEmptyDataSet) {
  const Scratch s("empty");
  const std::string ds = (s.dir / "bars").string(), manifest = ds + "/manifest.json";
  gppf::test::write_bars(ds, 4, 4, 1);
  ASSERT_EQ(run("inspect " + ds).status, 0);
  const nlohmann::json good = nlohmann::json::parse(gppf::test::read_text(manifest));
  nlohmann::json j = good;
  j["splits"]["test"] = {{"count", 0}, {"shards", nlohmann::json::array()}};
  gppf::test::write_text(manifest, j.dump());
  CommandResult r = run("inspect " + ds);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(manifest + ": split 'test' has no samples"), std::string::npos) << r.output;
  j = good;
  j["splits"] = nlohmann::json::object();
  gppf::test::write_text(manifest, j.dump());
  r = run("inspect " + ds);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(manifest + ": lists no splits"), std::string::npos) << r.output;
  // Counts that agree with each other but not with the shard: the shard is named.
  j = good;
  j["splits"]["train"]["count"] = 5;
  j["splits"]["train"]["shards"][0]["count"] = 5;
  gppf::test::write_text(manifest, j.dump());
  r = run("inspect " + ds);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("holds 4 samples, the manifest says 5"), std::string::npos) << r.output;
}

// Class names and config values come from files: escape sequences in them reach the terminal escaped.
TEST(Cli, ControlCharactersFromFilesAreEscaped) {
  const Scratch s("ctl");
  const std::string ds = (s.dir / "bars").string(), manifest = ds + "/manifest.json";
  gppf::test::write_bars(ds, 4, 4, 1);
  nlohmann::json j = nlohmann::json::parse(gppf::test::read_text(manifest));
  j["classes"][0] = "left\x1b[2J\x1b]0;owned\x07";
  j["source"] = "two\nlines";
  gppf::test::write_text(manifest, j.dump());
  CommandResult r = run("inspect " + ds);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("left\\x1b[2J\\x1b]0;owned\\x07"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("source: two\\nlines"), std::string::npos) << r.output;

  const std::string cfg = (s.dir / "c.yaml").string();
  gppf::test::write_text(cfg, "tasks:\n  - {name: a, type: \"\\e[31mred\\nline\", dataset: " + ds + "}\n");
  r = run("inspect " + cfg);
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("'\\x1b[31mred\\nline' is not classification"), std::string::npos) << r.output;
}

}  // namespace
