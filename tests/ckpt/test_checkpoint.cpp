// Checkpoints: a save/load round trip restores every tensor; N steps straight equal K steps + resume +
// N-K steps bitwise; `latest` and keep-last-N; damaged files give one clear line and `--resume auto`
// falls back past them; `gppf eval` reproduces summary.json; `gppf inspect` on good and damaged files.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/cuda_runtime.hpp"
#include "src/optim/optimizer.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/network.hpp"
#include "src/train/trainer.hpp"
#include "tests/common/command.hpp"
#include "tests/common/datasets.hpp"
#include "tests/common/files.hpp"

namespace gppf::train {
namespace {

using test::ckpt;
using test::read_text;
using test::write_text;

namespace fs = std::filesystem;
using nlohmann::json;

using test::CommandResult;

// Runs the gppf binary; `output` is stdout, plus stderr when `with_stderr`.
CommandResult run_gppf(const std::string& args, bool with_stderr = true) {
  return test::run_command(std::string(GPPF_BINARY) + " " + args, with_stderr ? "" : "/dev/null");
}

// A network and optimizer of `c`, with everything a checkpoint holds.
struct Model {
  std::vector<TaskSpec> specs;
  std::unique_ptr<Network> net;
  std::unique_ptr<optim::Optimizer> opt;
  explicit Model(const TrainConfig& c) {
    for (const auto& t : c.tasks) specs.push_back(resolve_task(t, io::Dataset::open(t.dataset).manifest()));
    net = std::make_unique<Network>(c, specs);
    opt = optim::Optimizer::create(c.optimizer, net->parameters());
  }
  CheckpointTensors tensors() { return {net->parameters(), net->buffers(), opt->state()}; }
};

// Named tensors of a model, flattened: "params/x", "buffers/y", "optimizer/z".
std::vector<std::pair<std::string, const Tensor*>> all_tensors(Model& m) {
  std::vector<std::pair<std::string, const Tensor*>> out;
  const CheckpointTensors t = m.tensors();
  for (auto* p : t.params) out.emplace_back("params/" + p->name, &p->value);
  for (const auto& [n, x] : t.buffers) out.emplace_back("buffers/" + n, x);
  for (const auto& [n, x] : t.optimizer) out.emplace_back("optimizer/" + n, x);
  return out;
}

// Number of tensors whose bytes differ (the names must agree).
int count_different(Model& a, Model& b) {
  const auto ta = all_tensors(a), tb = all_tensors(b);
  EXPECT_EQ(ta.size(), tb.size());
  int diff = 0;
  for (std::size_t i = 0; i < ta.size() && i < tb.size(); ++i) {
    EXPECT_EQ(ta[i].first, tb[i].first);
    const Tensor &x = *ta[i].second, &y = *tb[i].second;
    if (x.nbytes() != y.nbytes() || std::memcmp(x.data(), y.data(), x.nbytes()) != 0) ++diff;
  }
  return diff;
}

class Checkpoint : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-ckpt-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    test::write_bars((s_dir / "bars").string(), 128, 40, 1);
    test::write_squares((s_dir / "squares").string(), 64, 20, 2);
    // The reference run: 12 steps straight, checkpoints every 3 steps, the newest 3 kept.
    s_straight = run_training(config(), {(s_dir / "straight").string(), ""});
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }

  // AdamW (step counters and two moments), one task sampled half the time (its RNG matters).
  static TrainConfig config(const std::vector<std::string>& overrides = {}) {
    const std::string yaml = str(R"(
steps: 12
log_every: 4
threads: 1
eval_every: 0
bn_calibration_batches: 2
checkpoint_every: 3
keep_checkpoints: 3
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.01}
schedule: {type: cosine, warmup_steps: 2}
model:
  backbone: gppf-mini
  stem_channels: 4
  stages: [[8, 1, 1], [8, 1, 2]]
  legos: 3
  top_k: 1
  routing: {warmup: noisy, warmup_steps: 4}
  neck: {first_stage: 0, channels: 8}
tasks:
  - {name: bars, type: classification, dataset: )",
                                 (s_dir / "bars").string(), R"(, batch_size: 16}
  - {name: det, type: detection, dataset: )",
                                 (s_dir / "squares").string(), R"(, batch_size: 8, sampling_weight: 0.5}
  - {name: seg, type: segmentation, dataset: )",
                                 (s_dir / "squares").string(), R"(, batch_size: 8}
)");
    return parse_config(yaml, overrides, "ckpt.yaml");
  }

  static fs::path s_dir;
  static TrainSummary s_straight;
};
fs::path Checkpoint::s_dir;
TrainSummary Checkpoint::s_straight;

TEST_F(Checkpoint, RoundTripRestoresEveryTensor) {
  const TrainConfig c = config();
  Model a(c);
  // Two real steps so that moments, step counters and BN statistics are not at their initial values.
  for (int s = 0; s < 2; ++s) {
    for (int t = 0; t < 3; ++t) {
      io::LoaderConfig lc;
      lc.batch_size = 8;
      lc.workers = 1;
      lc.pinned = false;
      io::Loader loader(io::Dataset::open(c.tasks[static_cast<std::size_t>(t)].dataset), lc);
      a.net->train_step(t, loader.next(), s);
    }
    a.opt->step(0.01f);
  }
  CheckpointMeta meta;
  meta.step = 2;
  meta.config_yaml = c.yaml;
  meta.optimizer_type = "adamw";
  meta.tasks.push_back({"bars", "classification", "x", io::LoaderState{"train", 5, 0, 1, 1, 3}, "1 2 3"});
  const std::string path = (s_dir / "roundtrip.h5").string();
  write_checkpoint(path, meta, a.tensors());

  TrainConfig other = c;
  other.seed = 99;  // different initial values everywhere
  Model b(other);
  const int before = count_different(a, b);
  EXPECT_GT(before, static_cast<int>(all_tensors(a).size()) / 2);
  EXPECT_EQ(read_checkpoint_meta(path).step, 2);
  const CheckpointMeta got = read_checkpoint(path, b.tensors(), {});
  EXPECT_EQ(count_different(a, b), 0);
  EXPECT_EQ(got.step, 2);
  EXPECT_EQ(got.config_yaml, c.yaml);
  ASSERT_EQ(got.tasks.size(), 1u);
  EXPECT_EQ(got.tasks[0].loader, meta.tasks[0].loader);
  EXPECT_EQ(got.tasks[0].sampling_rng, "1 2 3");
  EXPECT_TRUE(got.complete);
  // Step counters are host i64 and survived.
  bool saw_step = false;
  for (const auto& [n, t] : b.opt->state())
    if (n.ends_with(".step")) {
      saw_step = true;
      EXPECT_EQ(t->dtype(), DType::I64);
    }
  EXPECT_TRUE(saw_step);

  // A network of another shape does not fit: a clear mismatch, not "damaged".
  Model wrong(config({"model.stem_channels=6"}));
  try {
    read_checkpoint(path, wrong.tensors(), {});
    FAIL() << "expected a mismatch";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("does not fit"), std::string::npos) << e.reason();
  }
}

TEST_F(Checkpoint, LatestPointsAtTheNewestAndOnlyTheLastNAreKept) {
  const fs::path run = s_dir / "straight";
  EXPECT_EQ(s_straight.steps, 12);
  EXPECT_EQ(list_checkpoints(run.string()), (std::vector<std::string>{ckpt(run, 12), ckpt(run, 9), ckpt(run, 6)}));
  EXPECT_EQ(read_text(run / "checkpoints" / "latest"), "step-00000012.h5\n");
  EXPECT_EQ(resolve_checkpoint(run.string()), ckpt(run, 12));
  for (const auto& e : fs::directory_iterator(run / "checkpoints"))
    EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path();
  const CheckpointMeta m = verify_checkpoint(ckpt(run, 6));
  EXPECT_EQ(m.step, 6);
  ASSERT_EQ(m.tasks.size(), 3u);
  EXPECT_EQ(m.tasks[1].name, "det");
  EXPECT_GT(m.tasks[0].loader.batch, 0);
}

// Every checkpoint damaged: --resume auto refuses to start from step 0 (which would later prune them).
TEST_F(Checkpoint, ResumeAutoRefusesWhenEveryCheckpointIsDamaged) {
  const fs::path straight = s_dir / "straight", run = s_dir / "all-damaged";
  fs::create_directories(run / "checkpoints");
  fs::copy_file(ckpt(straight, 6), ckpt(run, 6));
  fs::resize_file(ckpt(run, 6), fs::file_size(ckpt(run, 6)) / 2);
  try {
    run_training(config(), {run.string(), "auto"});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.reason()).find("every checkpoint in"), std::string::npos) << e.reason();
  }
  EXPECT_TRUE(fs::exists(ckpt(run, 6)));
}

// Resumes from step 6 with --resume auto in a run directory whose newer checkpoints are damaged (a
// truncated one, a byte-flipped one) and which holds a .tmp left by a crash mid-write.
TEST_F(Checkpoint, ResumeAutoFallsBackAndMatchesTheStraightRunBitwise) {
  const fs::path straight = s_dir / "straight", run = s_dir / "resumed";
  fs::create_directories(run / "checkpoints");
  for (std::int64_t s : {6, 9, 12}) fs::copy_file(ckpt(straight, s), ckpt(run, s));
  write_text(run / "checkpoints" / "latest", "step-00000012.h5\n");
  // Newest: truncated to half.
  fs::resize_file(ckpt(run, 12), fs::file_size(ckpt(run, 12)) / 2);
  // Next: one byte flipped inside the data of the largest parameter.
  {
    const TrainConfig c = config();
    Model m(c);
    (void)read_checkpoint(ckpt(run, 9), m.tensors(), {});
    const nn::Parameter* big = nullptr;
    for (auto* p : m.net->parameters())
      if (!big || p->value.nbytes() > big->value.nbytes()) big = p;
    std::string bytes = read_text(ckpt(run, 9));
    const std::string needle(static_cast<const char*>(big->value.data()), big->value.nbytes());
    const auto at = bytes.find(needle);
    ASSERT_NE(at, std::string::npos);
    bytes[at + needle.size() / 2] ^= 0x10;
    write_text(ckpt(run, 9), bytes);
  }
  // A crash while writing step 15: its .tmp must be ignored.
  write_text(run / "checkpoints" / "step-00000015.h5.tmp", read_text(ckpt(run, 6)).substr(0, 1000));

  for (std::int64_t s : {12, 9}) {
    try {
      verify_checkpoint(ckpt(run, s));
      FAIL() << "expected step " << s << " to be refused";
    } catch (const Error& e) {
      const std::string msg = e.reason();
      EXPECT_NE(msg.find(ckpt(run, s)), std::string::npos) << msg;
      EXPECT_NE(msg.find("is damaged"), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  EXPECT_EQ(find_resume_checkpoint(run.string()), ckpt(run, 6));

  const TrainSummary resumed = run_training(config(), {run.string(), "auto"});
  EXPECT_EQ(resumed.metrics, s_straight.metrics);
  const TrainConfig c = config();
  Model a(c), b(c);
  (void)read_checkpoint(ckpt(straight, 12), a.tensors(), {});
  (void)read_checkpoint(ckpt(run, 12), b.tensors(), {});
  EXPECT_EQ(count_different(a, b), 0);
  // The loader positions and sampling RNGs of the two final checkpoints agree as well.
  const CheckpointMeta ma = verify_checkpoint(ckpt(straight, 12)), mb = verify_checkpoint(ckpt(run, 12));
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ma.tasks[i].loader.to_json(), mb.tasks[i].loader.to_json());
    EXPECT_EQ(ma.tasks[i].sampling_rng, mb.tasks[i].sampling_rng);
  }
  // The stale .tmp was cleaned up by the first save; metrics.jsonl continues from step 6.
  EXPECT_FALSE(fs::exists(run / "checkpoints" / "step-00000015.h5.tmp"));
  EXPECT_EQ(read_text(run / "checkpoints" / "latest"), "step-00000012.h5\n");

  // And a resume from a checkpoint that is not the newest, by path: the same end point.
  const fs::path run2 = s_dir / "resumed-by-path";
  const TrainSummary r2 = run_training(config(), {run2.string(), ckpt(straight, 9)});
  Model d(c);
  (void)read_checkpoint(ckpt(run2, 12), d.tensors(), {});
  EXPECT_EQ(count_different(a, d), 0);
  EXPECT_EQ(r2.metrics, s_straight.metrics);
}

// Evaluations in between re-estimate BN statistics; the resumed run still ends bitwise equal.
TEST_F(Checkpoint, ResumeStaysEquivalentWithEvaluationsInBetween) {
  const std::vector<std::string> eval4 = {"eval_every=4", "eval_batches=1"};
  const fs::path straight = s_dir / "straight-eval", resumed = s_dir / "resumed-eval";
  run_training(config(eval4), {straight.string(), ""});
  // The resumed run's directory has the straight run's metrics.jsonl, as if it had run on to 12.
  fs::create_directories(resumed);
  fs::copy_file(straight / "metrics.jsonl", resumed / "metrics.jsonl");
  run_training(config(eval4), {resumed.string(), ckpt(straight, 6)});
  const TrainConfig c = config(eval4);
  Model a(c), b(c);
  (void)read_checkpoint(ckpt(straight, 12), a.tensors(), {});
  (void)read_checkpoint(ckpt(resumed, 12), b.tensors(), {});
  EXPECT_EQ(count_different(a, b), 0);
  // Step 9, after the step-8 evaluation re-estimated the BN statistics.
  Model c9a(c), c9b(c);
  (void)read_checkpoint(ckpt(straight, 9), c9a.tensors(), {});
  (void)read_checkpoint(ckpt(resumed, 9), c9b.tensors(), {});
  EXPECT_EQ(count_different(c9a, c9b), 0);
  // metrics.jsonl: the straight run's lines up to step 6 (one evaluation), then the resumed run's.
  std::int64_t last_step = 0;
  int evals = 0;
  std::ifstream in(resumed / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line);
    EXPECT_GE(j["step"].get<std::int64_t>(), last_step) << line;
    last_step = j["step"].get<std::int64_t>();
    evals += j["split"] == "val";
  }
  EXPECT_EQ(last_step, 12);
  EXPECT_EQ(evals, 9);  // steps 4, 8 and 12, three tasks each
}

// checkpoint_async: the periodic checkpoints written in the background hold what a synchronous save
// holds, and a resume from one of them stays bitwise on the straight run.
TEST_F(Checkpoint, AsynchronousCheckpointsEqualSynchronousOnes) {
  const fs::path straight = s_dir / "straight", run = s_dir / "async";
  const TrainSummary s = run_training(config({"checkpoint_async=true"}), {run.string(), ""});
  EXPECT_EQ(s.metrics, s_straight.metrics);
  const TrainConfig c = config();
  for (std::int64_t step : {9, 12}) {
    Model a(c), b(c);
    (void)read_checkpoint(ckpt(straight, step), a.tensors(), {});
    (void)read_checkpoint(ckpt(run, step), b.tensors(), {});
    const auto pa = a.net->parameters(), pb = b.net->parameters();
    for (std::size_t i = 0; i < pa.size(); ++i)
      ASSERT_EQ(pa[i]->value.to_float_vector(), pb[i]->value.to_float_vector()) << step << " " << pa[i]->name;
  }
  const fs::path resumed = s_dir / "async-resumed";
  fs::create_directories(resumed / "checkpoints");
  fs::copy_file(ckpt(run, 9), ckpt(resumed, 9));
  EXPECT_EQ(run_training(config(), {resumed.string(), "auto"}).metrics, s_straight.metrics);
}

TEST_F(Checkpoint, ResumeAutoWithoutCheckpointsStartsFresh) {
  EXPECT_EQ(find_resume_checkpoint((s_dir / "nothing-here").string()), "");
  const fs::path run = s_dir / "empty";
  fs::create_directories(run / "checkpoints");
  write_text(run / "checkpoints" / "step-00000003.h5.tmp", "partial");
  EXPECT_TRUE(list_checkpoints(run.string()).empty());
  EXPECT_EQ(find_resume_checkpoint(run.string()), "");
}

TEST_F(Checkpoint, EvalReproducesTheSummaryExactly) {
  const fs::path run = s_dir / "straight";
  const json summary = json::parse(read_text(run / "summary.json"));
  const CommandResult r = run_gppf("eval --checkpoint " + run.string() + " --json", false);
  ASSERT_EQ(r.status, 0) << r.output;
  const json got = json::parse(r.output);
  int compared = 0;
  for (const auto& [task, entry] : summary["tasks"].items())
    for (const auto& [k, v] : entry["metrics"].items()) {
      EXPECT_EQ(got[task][k].get<double>(), v.get<double>()) << task << " " << k;
      ++compared;
    }
  EXPECT_EQ(compared, 7);  // top1, top5 | map, map50 | miou, miou_fg, pixel_acc
  // One task, table output.
  const CommandResult t = run_gppf("eval --checkpoint " + ckpt(run, 12) + " --task bars");
  EXPECT_EQ(t.status, 0) << t.output;
  EXPECT_NE(t.output.find("top1"), std::string::npos) << t.output;
  EXPECT_NE(run_gppf("eval --checkpoint " + ckpt(run, 12) + " --task nope").status, 0);
  // --device overrides the checkpoint's: host reproduces it; a GPU where none is gives one line.
  const CommandResult h = run_gppf("eval --checkpoint " + run.string() + " --json --device host", false);
  ASSERT_EQ(h.status, 0) << h.output;
  EXPECT_EQ(json::parse(h.output), got);
  if (!cuda::available()) {
    const CommandResult g = run_gppf("eval --checkpoint " + run.string() + " --device cuda:3");
    EXPECT_EQ(g.status, 1);
    EXPECT_NE(g.output.find("key 'device': cuda:3"), std::string::npos) << g.output;
  }
  // A damaged checkpoint: non-zero, one line naming it.
  const fs::path bad = s_dir / "eval-truncated.h5";
  fs::copy_file(ckpt(run, 12), bad, fs::copy_options::overwrite_existing);
  fs::resize_file(bad, fs::file_size(bad) / 3);
  const CommandResult d = run_gppf("eval --checkpoint " + bad.string());
  EXPECT_EQ(d.status, 1);
  EXPECT_NE(d.output.find("checkpoint " + bad.string() + " is damaged"), std::string::npos) << d.output;
}

TEST_F(Checkpoint, InspectDescribesGoodFilesAndRefusesDamagedOnes) {
  const fs::path run = s_dir / "straight";
  const CommandResult r = run_gppf("inspect " + ckpt(run, 12));
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* s : {"step: 12 of 12", "complete: yes", "bars: classification", "det: detection",
                        "seg: segmentation", "stage1.block0:", "stage2.block0:", "parameters:", "adamw"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << " missing from:\n" << r.output;
  // Every task routes to exactly top_k = 1 lego per layer.
  std::size_t lines = 0;
  for (std::size_t at = r.output.find(": lego"); at != std::string::npos; at = r.output.find(": lego", at + 1)) ++lines;
  EXPECT_EQ(lines, 6u) << r.output;

  const fs::path bad = s_dir / "truncated.h5";
  fs::copy_file(ckpt(run, 12), bad, fs::copy_options::overwrite_existing);
  fs::resize_file(bad, fs::file_size(bad) - 100);
  const CommandResult d = run_gppf("inspect " + bad.string());
  EXPECT_NE(d.status, 0);
  EXPECT_NE(d.output.find(bad.string() + " is damaged"), std::string::npos) << d.output;
  EXPECT_NE(d.output.find("complete: no"), std::string::npos) << d.output;
}

TEST_F(Checkpoint, WallClockTriggerSavesAtStepBoundaries) {
  const fs::path run = s_dir / "timed";
  // A trigger so short that every step boundary is due: checkpoints 1..4, then the final one.
  run_training(config({"steps=5", "checkpoint_every=0", "checkpoint_minutes=1e-9", "keep_checkpoints=10"}),
               {run.string(), ""});
  EXPECT_EQ(list_checkpoints(run.string()),
            (std::vector<std::string>{ckpt(run, 5), ckpt(run, 4), ckpt(run, 3), ckpt(run, 2), ckpt(run, 1)}));
  // Resuming from step 2 in the same directory replaces the newer timeline: 3 and 4 go, 5 is rewritten.
  run_training(config({"steps=5", "checkpoint_every=0", "keep_checkpoints=10"}), {run.string(), ckpt(run, 2)});
  EXPECT_EQ(list_checkpoints(run.string()), (std::vector<std::string>{ckpt(run, 5), ckpt(run, 2), ckpt(run, 1)}));
}

// SIGTERM to a running `gppf train`: a checkpoint at the next step boundary, exit status 75.
TEST_F(Checkpoint, SigtermCheckpointsAndExitsWithTempfail) {
  const fs::path run = s_dir / "signalled", yaml = s_dir / "long.yaml";
  write_text(yaml, config().yaml);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string out = run.string(), cfg = yaml.string();
    const int fd = ::open("/dev/null", O_WRONLY);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(GPPF_BINARY, GPPF_BINARY, "train", "--config", cfg.c_str(), "--out", out.c_str(), "--set", "steps=1000000",
            "--set", "log_every=1", "--set", "checkpoint_every=0", "--set", "schedule.type=constant", nullptr);
    ::_exit(127);
  }
  // Wait until it has logged two steps.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int lines = 0;
  while (lines < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::string text = read_text(run / "metrics.jsonl");
    lines = static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  }
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_GE(lines, 2) << "gppf train did not start logging";
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), kExitRequeue);
  const std::string path = resolve_checkpoint(run.string());
  const CheckpointMeta m = verify_checkpoint(path);
  EXPECT_GE(m.step, 1);
  EXPECT_LT(m.step, 1000000);
  EXPECT_EQ(path, ckpt(run, m.step));
  EXPECT_FALSE(fs::exists(run / "summary.json"));
}

}  // namespace
}  // namespace gppf::train
