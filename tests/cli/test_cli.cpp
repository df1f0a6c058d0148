// The binary's contract (DESIGN.md): --help, --version, exit 0 on success, non-zero with a one-line
// reason otherwise, and never a made-up result from a subcommand that is not built.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "src/train/checkpoint.hpp"
#include "src/train/trainer.hpp"
#include "tests/common/command.hpp"
#include "tests/common/datasets.hpp"
#include "tests/common/files.hpp"

namespace {

namespace fs = std::filesystem;

using gppf::test::CommandResult;

// `prefix`: shell words before the binary (environment variables, "cd DIR &&").
CommandResult run(const std::string& args, const std::string& prefix = "") {
  return gppf::test::run_command(prefix + " " + std::string(GPPF_BINARY) + " " + args);
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

// One line each; usage errors exit 2 (not CLI11's 105-109); 1 for errors of the work itself.
bool one_line(const std::string& s) { return !s.empty() && s.find('\n') == s.size() - 1; }

TEST(Cli, BadArgumentsFailWithAReason) {
  CommandResult r = run("no-such-command");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("unknown command 'no-such-command' (commands: train, eval,"), std::string::npos) << r.output;
  EXPECT_TRUE(one_line(r.output)) << r.output;
  r = run("--log-level warn trian --config x.yaml");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("unknown command 'trian'; did you mean 'train'?"), std::string::npos) << r.output;
  r = run("");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("see 'gppf --help'"), std::string::npos) << r.output;
  r = run("train --out /tmp/x");  // --config missing
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("gppf train: error: --config is required; see 'gppf train --help'"), std::string::npos)
      << r.output;
  EXPECT_TRUE(one_line(r.output)) << r.output;
  r = run("train --config " + std::string(GPPF_SOURCE_DIR) + "/configs/mini.yaml --out /tmp/x --no-such-option");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--no-such-option"), std::string::npos) << r.output;
  r = run("convert --format tiff --out /tmp/x");
  EXPECT_EQ(r.status, 2) << r.output;
}

// A run shorter than its warm-up names both keys and the way out; the source location is for --verbose.
TEST(Cli, ErrorsSayWhatToDoAndHideTheSourceLine) {
  const std::string config = std::string(GPPF_SOURCE_DIR) + "/configs/mini.yaml";
  CommandResult r = run("train --config " + config + " --set steps=5 --out /tmp/gppf-never-created");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("steps (5) must exceed schedule.warmup_steps (150) for the cosine schedule: shorten the "
                          "warm-up as well, e.g. --set schedule.warmup_steps=0"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find(".cpp:"), std::string::npos) << r.output;
  EXPECT_TRUE(one_line(r.output)) << r.output;
  r = run("--verbose train --config " + config + " --set steps=5 --out /tmp/gppf-never-created");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("gppf train: error: steps (5)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("(config.cpp:"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists("/tmp/gppf-never-created"));
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

// A run directory and a long training run in it, for the signal and run-directory tests.
class CliRun : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-cli-run-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    gppf::test::write_bars((s_dir / "bars").string(), 64, 16, 1);
    std::ofstream(s_dir / "bars.yaml")
        << "steps: 1000000\nlog_every: 1\nthreads: 1\nschedule: {type: constant}\n"
           "model: {backbone: gppf-mini, stem_channels: 4, stages: [[8, 1, 1], [8, 1, 2]], legos: 2, top_k: 1,"
           " routing: {warmup: none}, neck: {first_stage: 0, channels: 8}}\n"
           "tasks:\n  - {name: bars, type: classification, dataset: "
        << (s_dir / "bars").string() << ", batch_size: 16}\n";
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }

  // Starts `gppf train` on run_dir (output to /dev/null) and waits until it has logged two steps.
  static pid_t start_training(const fs::path& run_dir) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const std::string out = run_dir.string(), cfg = (s_dir / "bars.yaml").string();
      const int fd = ::open("/dev/null", O_WRONLY);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execl(GPPF_BINARY, GPPF_BINARY, "train", "--config", cfg.c_str(), "--out", out.c_str(), nullptr);
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (int lines = 0; lines < 2 && std::chrono::steady_clock::now() < deadline;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      std::ifstream in(run_dir / "metrics.jsonl");
      lines = 0;
      for (std::string line; std::getline(in, line);) ++lines;
    }
    return pid;
  }
  static int exit_status(pid_t pid) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  static fs::path s_dir;
};
fs::path CliRun::s_dir;

class CliStopSignal : public CliRun, public ::testing::WithParamInterface<int> {};

// SIGINT (Ctrl-C) and SIGHUP (a closed terminal) checkpoint and exit 75 as SIGTERM and SIGUSR1 do.
TEST_P(CliStopSignal, CheckpointsAndExitsWithTempfail) {
  const fs::path dir = s_dir / ("signal-" + std::to_string(GetParam()));
  const pid_t pid = start_training(dir);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, GetParam()), 0);
  EXPECT_EQ(exit_status(pid), gppf::train::kExitRequeue);
  const gppf::train::CheckpointMeta m = gppf::train::verify_checkpoint(gppf::train::resolve_checkpoint(dir.string()));
  EXPECT_GE(m.step, 1);
  EXPECT_FALSE(fs::exists(dir / "summary.json"));
  // `gppf inspect` on the run directory and on its `latest` pointer: the checkpoint that --resume takes.
  const std::string file = gppf::train::resolve_checkpoint(dir.string());
  CommandResult r = run("inspect " + dir.string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("finished: no (no summary.json)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("the last: stopped, exit 75"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("checkpoint " + file), std::string::npos) << r.output;
  const nlohmann::json e =
      nlohmann::json::parse(gppf::test::read_text((dir / "run.json").string()))["invocations"].back();
  EXPECT_EQ(e["status"], "stopped");
  EXPECT_EQ(e["exit_code"], gppf::train::kExitRequeue);
  EXPECT_NE(e["command_line"].get<std::string>().find(" train --config "), std::string::npos) << e.dump();
  r = run("inspect " + (dir / "checkpoints" / "latest").string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("checkpoint " + file), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(gppf::str("step: ", m.step, " of")), std::string::npos) << r.output;
}
INSTANTIATE_TEST_SUITE_P(Signals, CliStopSignal, ::testing::Values(SIGINT, SIGHUP));

// A second trainer on a directory in use stops at once, naming it; a finished run's directory is
// refused without --resume or --force.
TEST_F(CliRun, RunDirectoriesAreLockedAndNotReused) {
  const fs::path dir = s_dir / "shared";
  const pid_t pid = start_training(dir);
  ASSERT_GT(pid, 0);
  const std::string cmd = gppf::str("train --config ", (s_dir / "bars.yaml").string(), " --out ", dir.string());
  const CommandResult second = run(cmd + " --resume auto --set steps=1");
  ::kill(pid, SIGTERM);
  EXPECT_EQ(exit_status(pid), gppf::train::kExitRequeue);
  EXPECT_NE(second.status, 0);
  EXPECT_NE(second.output.find("in use by another trainer"), std::string::npos) << second.output;
  const CommandResult refused = run(cmd + " --set steps=1");
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.output.find("--force"), std::string::npos) << refused.output;
  EXPECT_EQ(run(cmd + " --set steps=1 --force").status, 0);
}

// A capped final evaluation and `gppf eval --max-batches` say so: in summary.json, on the table, in the log.
TEST_F(CliRun, EvaluationCapsAreStated) {
  const fs::path dir = s_dir / "capped";
  const std::string cfg = (s_dir / "bars.yaml").string();
  CommandResult r =
      run(gppf::str("train --config ", cfg, " --set steps=2 --set final_eval_batches=1 --out ", dir.string()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("final evaluation on test and val (at most 1 batches per task and split"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("(test and val: at most 1 batches per task, not the whole splits)"), std::string::npos)
      << r.output;
  const nlohmann::json summary = nlohmann::json::parse(gppf::test::read_text((dir / "summary.json").string()));
  EXPECT_EQ(summary.at("eval_batches"), 1);
  r = run("eval --checkpoint " + dir.string() + " --max-batches 1 --json");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("on at most 1 batches per task of split test"), std::string::npos) << r.output;
  EXPECT_EQ(run("eval --checkpoint " + dir.string() + " --max-batches -1").status, 2);
  r = run("eval --checkpoint " + dir.string() + " --task brs");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("has no task 'brs'; did you mean 'bars'?"), std::string::npos) << r.output;
  r = run(gppf::str("train --config ", cfg, " --set final_eval_batches=-1 --out ", (s_dir / "never").string()));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("'final_eval_batches' must be >= 0"), std::string::npos) << r.output;
}

// Watching a run: the live line on a terminal (GPPF_PROGRESS=tty stands in for one), evaluation
// progress, and RUN_DIR/train.log with the root's log lines, the training lines and the table.
TEST_F(CliRun, TrainLogAndProgressLines) {
  const fs::path dir = s_dir / "watched";
  const std::string cfg = (s_dir / "bars.yaml").string();
  CommandResult r = run(gppf::str("train --config ", cfg, " --set steps=3 --set log_every=2 --out ", dir.string()),
                        "GPPF_PROGRESS=tty");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("\rstep 2/3"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\reval test bars: batch 1/"), std::string::npos) << r.output;
  const std::string log = gppf::test::read_text((dir / "train.log").string());
  for (const char* want :
       {"[info] gppf train: 1 task", "step 2/3 lr", "step 3/3 lr", "final evaluation on test and val",
        "bars                 classification  top1", "3 steps in "})
    EXPECT_NE(log.find(want), std::string::npos) << want << " missing from train.log:\n" << log;
  EXPECT_EQ(log.find('\r'), std::string::npos) << log;
  const nlohmann::json gppf_build =
      nlohmann::json::parse(gppf::test::read_text((dir / "run.json").string()))["invocations"].back()["gppf"];
  for (const char* key : {"version", "git", "git_dirty", "build_type", "cuda", "onednn"})
    EXPECT_TRUE(gppf_build.contains(key)) << key << " missing from " << gppf_build.dump();
  EXPECT_TRUE(gppf_build["git_dirty"].is_boolean());
  // The commit is taken at build time, not at configure time: a commit after configuring used to
  // leave the old one in every run.json and checkpoint. A binary built after HEAD was committed names
  // HEAD (one built before a later commit rightly names its own).
  const auto head =
      gppf::test::run_command(gppf::str("git -C ", GPPF_SOURCE_DIR, " log -1 --format='%h %ct' HEAD"), "/dev/null");
  std::istringstream head_fields(head.output);
  std::string head_sha;
  long long head_time = 0;
  if (head.status == 0 && (head_fields >> head_sha >> head_time)) {
    const auto built = std::filesystem::last_write_time(GPPF_BINARY);
    const auto built_s =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::file_clock::to_sys(built).time_since_epoch())
            .count();
    if (built_s > head_time + 1) {
      EXPECT_EQ(gppf_build["git"], head_sha);
    }
  }
  // Off a terminal: no carriage returns, the windows as plain log lines.
  r = run("eval --checkpoint " + dir.string(), "GPPF_PROGRESS=plain");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find('\r'), std::string::npos) << r.output;
  // A resumed run appends to train.log.
  r = run(gppf::str("train --config ", cfg, " --set steps=4 --set log_every=2 --resume auto --out ", dir.string()));
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string resumed = gppf::test::read_text((dir / "train.log").string());
  EXPECT_EQ(resumed.rfind(log, 0), 0u) << resumed;
  EXPECT_NE(resumed.find("step 4/4 lr"), std::string::npos) << resumed;
}

// Relative data set paths start from the config's folder, or --data-root; a path found only below
// the working directory still works, with a warning; inspect needs no data with --input.
TEST_F(CliRun, DataPathsStartAtTheConfigsFolder) {
  const fs::path sub = s_dir / "configs";
  fs::create_directories(sub);
  const std::string head =
      "steps: 2\nthreads: 1\nschedule: {type: constant}\nmodel: {backbone: gppf-mini, stem_channels: 4, stages: "
      "[[8, 1, 1]], legos: 2, top_k: 1, neck: {first_stage: 0, channels: 8}}\n";
  gppf::test::write_text((sub / "up.yaml").string(), head +
                                                         "tasks:\n  - {name: bars, type: classification, "
                                                         "dataset: ../bars, batch_size: 16}\n");
  gppf::test::write_text((sub / "plain.yaml").string(), head +
                                                            "tasks:\n  - {name: bars, type: classification, "
                                                            "dataset: bars, batch_size: 16}\n");
  CommandResult r = run("inspect " + (sub / "up.yaml").string(), "cd / &&");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("stage1.block0"), std::string::npos) << r.output;
  r = run("inspect " + (sub / "plain.yaml").string() + " --data-root " + s_dir.string(), "cd / &&");
  EXPECT_EQ(r.status, 0) << r.output;
  r = run("inspect " + (sub / "plain.yaml").string(), "cd " + s_dir.string() + " &&");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("is not in the config's folder"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("write it as ../bars"), std::string::npos) << r.output;
  // The data is not here: say what to do; --input describes the network on that shape.
  r = run("inspect " + (sub / "plain.yaml").string(), "cd / &&");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("pass --input HxWxC[:CLASSES]"), std::string::npos) << r.output;
  r = run("inspect " + (sub / "plain.yaml").string() + " --input 16x16x1:4", "cd / &&");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("every task on 16x16x1:4 input"), std::string::npos) << r.output;
  // The run records the absolute path.
  const fs::path run_dir = s_dir / "relative";
  r = run(gppf::str("train --config ", (sub / "up.yaml").string(), " --out ", run_dir.string()), "cd / &&");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(gppf::test::read_text((run_dir / "config.yaml").string()).find("dataset: " + (s_dir / "bars").string()),
            std::string::npos);
  // A fine-tune config has no model section: inspect says so, and describes the checkpoint's with --checkpoint.
  gppf::test::write_text(
      (sub / "tune.yaml").string(),
      "steps: 2\ntasks:\n  - {name: bars, type: classification, dataset: ../bars, batch_size: 16}\n");
  r = run("inspect " + (sub / "tune.yaml").string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("has no model section"), std::string::npos) << r.output;
  r = run("inspect " + (sub / "tune.yaml").string() + " --checkpoint " + run_dir.string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("with the network of " + gppf::train::resolve_checkpoint(run_dir.string())),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("stage2"), std::string::npos) << r.output;  // one stage, as the checkpoint's
}

// `gppf inspect --json`: one JSON document for a run directory (with its checkpoint), a checkpoint,
// a config and a data set, holding what the text shows.
TEST_F(CliRun, InspectJson) {
  const fs::path dir = s_dir / "json";
  CommandResult r =
      run(gppf::str("train --config ", (s_dir / "bars.yaml").string(), " --set steps=2 --out ", dir.string()));
  ASSERT_EQ(r.status, 0) << r.output;
  r = run("inspect --json " + dir.string(), "GPPF_PROGRESS=plain");
  ASSERT_EQ(r.status, 0) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["kind"], "run directory");
  EXPECT_TRUE(j["finished"].get<bool>());
  EXPECT_EQ(j["last_invocation"]["status"], "finished");
  EXPECT_EQ(j["checkpoint"]["step"], 2);
  EXPECT_EQ(j["checkpoint"]["tasks"][0]["name"], "bars");
  EXPECT_EQ(j["checkpoint"]["tasks"][0]["routes"][0]["legos"].size(), 1u);  // top_k 1
  const std::int64_t total = j["checkpoint"]["parameters"]["total"];
  r = run("inspect " + gppf::train::resolve_checkpoint(dir.string()));
  EXPECT_NE(r.output.find(gppf::str("parameters: ", total, " total")), std::string::npos) << r.output;
  r = run("inspect --json " + (s_dir / "bars.yaml").string());
  ASSERT_EQ(r.status, 0) << r.output;
  j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["kind"], "config");
  EXPECT_EQ(j["network"]["tasks"][0]["input"], nlohmann::json({8, 8, 1}));
  EXPECT_EQ(j["network"]["layers"][0]["layer"], "stem");
  EXPECT_EQ(j["network"]["parameters"]["total"], total);
  r = run("inspect --json " + (s_dir / "bars").string());
  ASSERT_EQ(r.status, 0) << r.output;
  j = nlohmann::json::parse(r.output);
  EXPECT_TRUE(j["ok"].get<bool>());
  EXPECT_EQ(j["manifest"]["task"], "classification");
  EXPECT_GT(j["samples_checked"].get<std::int64_t>(), 0);
}

// A gppf-vit checkpoint: inspect names each block's MLP lego layer with the task's top-k legos, and
// its active parameters count the chosen MLP legos (top-2 of 3: fewer than all).
TEST_F(CliRun, InspectVitCheckpointRoutes) {
  const fs::path dir = s_dir / "vit";
  CommandResult r = run(gppf::str("train --config ", (s_dir / "bars.yaml").string(),
                                  " --set steps=2 --set model.backbone=gppf-vit --set model.stages=[] "
                                  "--set model.vit.patch=4 --set model.vit.dim=8 --set model.vit.depth=2 "
                                  "--set model.vit.heads=2 --set model.legos=3 --set model.top_k=2 --out ",
                                  dir.string()));
  ASSERT_EQ(r.status, 0) << r.output;
  r = run("inspect --json " + gppf::train::resolve_checkpoint(dir.string()));
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["model"]["backbone"], "gppf-vit");
  const auto& routes = j["tasks"][0]["routes"];
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(routes[0]["layer"], "block0.mlp");
  EXPECT_EQ(routes[1]["legos"].size(), 2u);
  EXPECT_GT(j["parameters"]["legos"].get<std::int64_t>(), 0);
  EXPECT_LT(j["tasks"][0]["active_parameters"].get<std::int64_t>(), j["parameters"]["total"].get<std::int64_t>());
}

}  // namespace
