// The trainer against hostile input: damaged or missing splits stop it before step 1; summary.json
// holds test and val; non-finite gradients never reach the BN statistics and stop a run after
// max_nonfinite_steps; a run directory is locked and never silently reused; metrics.jsonl write
// failures and resumes keep the log honest.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "src/train/checkpoint.hpp"
#include "src/train/network.hpp"
#include "src/train/trainer.hpp"
#include "tests/common/datasets.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class HostileInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-hostile-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    test::write_bars((s_dir / "bars").string(), 64, 32, 1);
    test::write_squares((s_dir / "squares").string(), 32, 16, 2);
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }

  // bars only, from `data` (default the suite's).
  static TrainConfig config(const std::vector<std::string>& overrides = {}, const fs::path& data = {}) {
    const fs::path bars = data.empty() ? s_dir / "bars" : data;
    return parse_config(
        str("steps: 4\nlog_every: 1\nthreads: 1\nbn_calibration_batches: 1\n"
            "model: {backbone: gppf-mini, stem_channels: 4, stages: [[8, 1, 1], [8, 1, 2]], legos: 2, top_k: 1,"
            " routing: {warmup: none}, neck: {first_stage: 0, channels: 8}}\n"
            "tasks:\n  - {name: bars, type: classification, dataset: ",
            bars.string(), ", batch_size: 16}\n"),
        overrides, "hostile.yaml");
  }
  static std::string error_of(const TrainConfig& c, const TrainOptions& o) {
    try {
      run_training(c, o);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  static fs::path copy_of_bars(const std::string& name) {
    const fs::path to = s_dir / name;
    fs::copy(s_dir / "bars", to, fs::copy_options::recursive);
    return to;
  }
  static json read_json(const fs::path& p) {
    std::ifstream in(p);
    return json::parse(in);
  }
  static fs::path s_dir;
};
fs::path HostileInput::s_dir;

TEST_F(HostileInput, ADamagedTestSplitStopsTheRunBeforeStepOne) {
  const fs::path data = copy_of_bars("bars-damaged-test");
  const json m = read_json(data / "manifest.json");
  const fs::path shard = data / m["splits"]["test"]["shards"][0]["file"].get<std::string>();
  fs::resize_file(shard, fs::file_size(shard) - 10);
  const fs::path run = s_dir / "damaged-run";
  const std::string what = error_of(config({}, data), {run.string(), ""});
  EXPECT_NE(what.find(shard.string()), std::string::npos) << what;
  EXPECT_NE(what.find("split 'test' is damaged"), std::string::npos) << what;
  EXPECT_FALSE(fs::exists(run / "metrics.jsonl"));
  EXPECT_TRUE(list_checkpoints(run.string()).empty());
}

TEST_F(HostileInput, ADataSetWithoutValIsOneLineSayingToReconvert) {
  const fs::path data = copy_of_bars("bars-no-val");
  json m = read_json(data / "manifest.json");
  m["splits"].erase("val");
  std::ofstream(data / "manifest.json") << m.dump(2);
  const std::string what = error_of(config({}, data), {(s_dir / "no-val-run").string(), ""});
  EXPECT_NE(what.find(data.string()), std::string::npos) << what;
  EXPECT_NE(what.find("no 'val' split; re-convert"), std::string::npos) << what;
  EXPECT_EQ(what.find('\n'), std::string::npos) << what;
}

TEST_F(HostileInput, PeriodicEvaluationReadsValAndTheSummaryHasTestAndVal) {
  const fs::path run = s_dir / "val-run";
  const TrainSummary s = run_training(config({"eval_every=2"}), {run.string(), ""});
  std::ifstream in(run / "metrics.jsonl");
  std::set<std::pair<std::int64_t, std::string>> evals;
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line);
    if (j["split"] == "val" || j["split"] == "test")
      evals.insert({j["step"].get<std::int64_t>(), j["split"].get<std::string>()});
  }
  // Test numbers only in summary.json: metrics.jsonl keeps one evaluation split for the report.
  EXPECT_EQ(evals, (std::set<std::pair<std::int64_t, std::string>>{{2, "val"}, {4, "val"}}));
  const json summary = read_json(run / "summary.json");
  const json& bars = summary["tasks"]["bars"];
  ASSERT_TRUE(bars.contains("val")) << summary.dump();
  std::set<std::string> test_keys, val_keys;
  for (const auto& [k, v] : bars["metrics"].items()) test_keys.insert(k);
  for (const auto& [k, v] : bars["val"].items()) val_keys.insert(k);
  EXPECT_EQ(test_keys, val_keys);
  EXPECT_FALSE(val_keys.empty());
  EXPECT_EQ(s.val.at("bars").size(), val_keys.size());
}

TEST_F(HostileInput, ARunDirectoryWithARunIsRefusedWithoutResumeOrForce) {
  const fs::path run = s_dir / "reused";
  run_training(config({"steps=1"}), {run.string(), ""});
  const std::string what = error_of(config({"steps=1"}), {run.string(), ""});
  EXPECT_NE(what.find("holds a previous run"), std::string::npos) << what;
  EXPECT_NE(what.find("--resume auto"), std::string::npos) << what;
  EXPECT_NE(what.find("--force"), std::string::npos) << what;
  TrainOptions forced{run.string(), ""};
  forced.force = true;
  EXPECT_EQ(run_training(config({"steps=2"}), forced).steps, 2);
  EXPECT_EQ(list_checkpoints(run.string()).size(), 1u);  // step 1's went with the old run
}

TEST_F(HostileInput, ALockedRunDirectoryIsRefused) {
  const fs::path run = s_dir / "locked";
  fs::create_directories(run);
  const int fd = ::open((run / ".lock").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  const std::string what = error_of(config({"steps=1"}), {run.string(), ""});
  ::close(fd);
  EXPECT_NE(what.find("in use by another trainer"), std::string::npos) << what;
  EXPECT_EQ(run_training(config({"steps=1"}), {run.string(), ""}).steps, 1);  // released: it runs
}

TEST_F(HostileInput, AResumeKeepsEveryMetricsLineOnce) {
  const fs::path run = s_dir / "resumed";
  run_training(config({"steps=6", "checkpoint_every=2", "keep_checkpoints=5", "eval_every=2"}), {run.string(), ""});
  run_training(config({"steps=6", "checkpoint_every=2", "keep_checkpoints=5", "eval_every=2"}),
               {run.string(), (run / "checkpoints" / checkpoint_file_name(2)).string()});
  std::ifstream in(run / "metrics.jsonl");
  std::set<std::tuple<std::int64_t, std::string, std::string>> seen;
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const json j = json::parse(line);
    EXPECT_TRUE(
        seen.insert({j["step"].get<std::int64_t>(), j["task"].get<std::string>(), j["split"].get<std::string>()})
            .second)
        << line;
  }
  EXPECT_GE(lines, 6);
}

TEST_F(HostileInput, AFailedMetricsWriteIsAnError) {
  const fs::path run = s_dir / "disk-full";
  fs::create_directories(run);
  fs::create_symlink("/dev/full", run / "metrics.jsonl");
  const std::string what = error_of(config({"steps=2"}), {run.string(), "auto"});
  EXPECT_NE(what.find("metrics.jsonl: write failed"), std::string::npos) << what;
}

TEST_F(HostileInput, NonFiniteGradientsStopTheRunAfterMaxNonfiniteSteps) {
  const fs::path run = s_dir / "diverged";
  const std::string what =
      error_of(config({"steps=50", "optimizer.lr=1e6", "max_nonfinite_steps=3"}), {run.string(), ""});
  EXPECT_NE(what.find("max_nonfinite_steps"), std::string::npos) << what;
  EXPECT_TRUE(list_checkpoints(run.string()).empty());
  // The run record says how it ended.
  const json e = read_json(run / "run.json")["invocations"].back();
  EXPECT_EQ(e["status"], "failed");
  EXPECT_EQ(e["exit_code"], 1);
  EXPECT_NE(e["error"].get<std::string>().find("max_nonfinite_steps"), std::string::npos) << e.dump();
  EXPECT_EQ(e["error"].get<std::string>().find(".cpp:"), std::string::npos) << e.dump();  // the reason only
}

TEST_F(HostileInput, TheRunRecordHoldsTheResolvedConfigAndEveryInvocation) {
  const fs::path run = s_dir / "record";
  TrainOptions o{run.string(), ""};
  o.command_line = "gppf train --config 'my config.yaml'";
  const TrainConfig c = config({"steps=2", "checkpoint_every=1", "keep_checkpoints=5"});
  run_training(c, o);
  json record = read_json(run / "run.json");
  EXPECT_EQ(record["config"], "config.yaml");
  ASSERT_EQ(record["invocations"].size(), 1u) << record.dump(2);
  const json first = record["invocations"][0];
  EXPECT_EQ(first["status"], "finished");
  EXPECT_EQ(first["exit_code"], 0);
  EXPECT_EQ(first["command_line"], o.command_line);
  EXPECT_EQ(first["start_step"], 0);
  EXPECT_EQ(first["end_step"], 2);
  EXPECT_EQ(first["ranks"], 1);
  EXPECT_EQ(first["config_file"], "hostile.yaml");
  EXPECT_FALSE(first["host"].get<std::string>().empty());
  EXPECT_FALSE(first["gppf"]["git"].get<std::string>().empty());
  EXPECT_EQ(first["start_time"].get<std::string>().back(), 'Z');
  EXPECT_GE(first["wall_seconds"].get<double>(), 0.0);
  // config.yaml is the resolved config: loaded, the same run.
  std::ifstream in(run / "config.yaml");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, c.resolved_yaml);
  EXPECT_EQ(parse_config(text, {}, "config.yaml").resolved_yaml, c.resolved_yaml);
  // A resume adds an entry and keeps the first.
  o.resume = (run / "checkpoints" / checkpoint_file_name(1)).string();
  run_training(config({"steps=3", "checkpoint_every=1", "keep_checkpoints=5"}), o);
  record = read_json(run / "run.json");
  ASSERT_EQ(record["invocations"].size(), 2u) << record.dump(2);
  EXPECT_EQ(record["invocations"][0]["end_step"], 2);
  EXPECT_EQ(record["invocations"][1]["start_step"], 1);
  EXPECT_EQ(record["invocations"][1]["end_step"], 3);
  EXPECT_EQ(record["invocations"][1]["resumed_from"], o.resume);
  EXPECT_EQ(record["invocations"][1]["status"], "finished");
}

}  // namespace
}  // namespace gppf::train
