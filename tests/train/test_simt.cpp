// The SIMT step: one step over several tasks accumulates exactly the per-task gradients; legos no
// task used stay untouched; a tiny run's loss falls and its summary holds the metrics.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/counters.hpp"
#include "io/dataset.hpp"
#include "io/h5.hpp"
#include "io/loader.hpp"
#include "src/train/bench_step.hpp"
#include "src/train/describe.hpp"
#include "src/train/network.hpp"
#include "src/train/trainer.hpp"
#include "tests/common/datasets.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;

using test::write_bars;
using test::write_squares;

class Simt : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-simt-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    write_bars((s_dir / "bars").string(), 256, 64, 1);
    write_squares((s_dir / "squares").string(), 128, 32, 2);
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }
  void run_tiny_vit(const std::string& pool);

  static TrainConfig tiny_config(int steps, int top_k = 1) {
    const std::string yaml = str(R"(
steps: )",
                                 steps, R"(
log_every: 10
threads: 1
optimizer: {type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0}
schedule: {type: constant}
model:
  backbone: gppf-mini
  stem_channels: 4
  stages: [[8, 1, 1], [8, 1, 2]]
  legos: 3
  top_k: )",
                                 top_k, R"(
  routing: {warmup: none}
  neck: {first_stage: 0, channels: 8}
)",
                                 test::tiny_tasks_yaml(s_dir.string()));
    return parse_config(yaml, {}, "tiny.yaml");
  }

  static fs::path s_dir;
};
fs::path Simt::s_dir;

std::vector<TaskSpec> specs_of(const TrainConfig& c) {
  std::vector<TaskSpec> specs;
  for (const auto& t : c.tasks) specs.push_back(resolve_task(t, io::Dataset::open(t.dataset).manifest()));
  return specs;
}

using test::first_batch;

void check_one_step_accumulates(const TrainConfig& c) {
  const auto specs = specs_of(c);
  std::vector<io::Batch> batches;
  for (const auto& t : c.tasks) batches.push_back(first_batch(t));

  Network joint(c, specs), separate(c, specs);
  for (int t = 0; t < 3; ++t) joint.train_step(t, batches[static_cast<std::size_t>(t)], 5);
  auto jp = joint.parameters(), sp = separate.parameters();
  ASSERT_EQ(jp.size(), sp.size());
  std::vector<std::vector<double>> sum(sp.size());
  std::vector<bool> used(sp.size(), false);
  for (int t = 0; t < 3; ++t) {
    separate.train_step(t, batches[static_cast<std::size_t>(t)], 5);
    for (std::size_t i = 0; i < sp.size(); ++i) {
      if (!sp[i]->touched) continue;
      const auto g = sp[i]->grad.to_float_vector();
      if (sum[i].empty()) sum[i].assign(g.size(), 0.0);
      for (std::size_t k = 0; k < g.size(); ++k) sum[i][k] += g[k];
      used[i] = true;
      sp[i]->clear_grad();
    }
  }
  int checked = 0;
  for (std::size_t i = 0; i < jp.size(); ++i) {
    ASSERT_EQ(jp[i]->touched, static_cast<bool>(used[i])) << jp[i]->name;
    if (!used[i]) continue;
    const auto g = jp[i]->grad.to_float_vector();
    double scale = 1e-6;
    for (double v : sum[i]) scale = std::max(scale, std::abs(v));
    for (std::size_t k = 0; k < g.size(); ++k)
      ASSERT_NEAR(g[k], sum[i][k], 1e-5 * scale) << jp[i]->name << "[" << k << "]";
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

TEST_F(Simt, OneStepAccumulatesThePerTaskGradients) { check_one_step_accumulates(tiny_config(1)); }
TEST_F(Simt, OneStepAccumulatesThePerTaskGradientsTopTwo) { check_one_step_accumulates(tiny_config(1, 2)); }

// Task batching (config `task_batching`): tasks of one input shape (det and seg here; bars is 8x8)
// run the backbone as one batch, each lego once on the samples of the tasks that routed to it. The
// same function as their passes one by one (per-task BN statistics, routes and gates): losses,
// gradients and running statistics agree to rounding.
void check_batching_matches(const TrainConfig& c) {
  const auto specs = specs_of(c);
  std::vector<io::Batch> batches;
  for (const auto& t : c.tasks) batches.push_back(first_batch(t));
  TrainConfig on = c;
  on.task_batching = "on";
  Network one(c, specs), batched(on, specs);
  ASSERT_FALSE(one.batches_tasks());
  ASSERT_TRUE(batched.batches_tasks());
  const std::vector<int> tasks{2, 0, 1};
  std::vector<io::Batch> ordered;
  for (int t : tasks) ordered.push_back(batches[static_cast<std::size_t>(t)]);
  const std::int64_t launches0 = runtime::counters().launches;
  const std::vector<PendingLoss> la = one.train_tasks(tasks, ordered, 5);
  const std::int64_t launches1 = runtime::counters().launches;
  const std::vector<PendingLoss> lb = batched.train_tasks(tasks, ordered, 5);
  const std::int64_t launches2 = runtime::counters().launches;
  EXPECT_LT(launches2 - launches1, launches1 - launches0);
  ASSERT_EQ(la.size(), 3u);
  ASSERT_EQ(lb.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(la[i].task, tasks[i]);
    EXPECT_EQ(lb[i].task, tasks[i]);
    const double a = one.read_loss(la[i]).total, b = batched.read_loss(lb[i]).total;
    EXPECT_NEAR(a, b, 1e-5 * std::max(1.0, std::abs(a))) << "task " << tasks[i];
  }
  // Largest difference over the tensor's largest value: the 1x1 convolutions run as GEMMs here and
  // as convolutions one by one, so sums that cancel differ in their last bits; a wrong gate, lego or
  // statistic is off by O(1).
  auto near = [](const std::string& what, const Tensor& x, const Tensor& y, double tol) {
    const auto a = x.to_float_vector(), b = y.to_float_vector();
    ASSERT_EQ(a.size(), b.size()) << what;
    double scale = 1e-6, err = 0;
    for (std::size_t k = 0; k < a.size(); ++k) {
      scale = std::max(scale, static_cast<double>(std::abs(a[k])));
      err = std::max(err, static_cast<double>(std::abs(a[k] - b[k])));
    }
    EXPECT_LT(err / scale, tol) << what;
  };
  auto pa = one.parameters(), pb = batched.parameters();
  ASSERT_EQ(pa.size(), pb.size());
  int checked = 0;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    ASSERT_EQ(pa[i]->touched, pb[i]->touched) << pa[i]->name;
    if (!pa[i]->touched) continue;
    near(pa[i]->name + ".grad", pa[i]->grad, pb[i]->grad, 2e-3);
    ++checked;
  }
  EXPECT_GT(checked, 10);
  auto ba = one.buffers(), bb = batched.buffers();
  ASSERT_EQ(ba.size(), bb.size());
  for (std::size_t i = 0; i < ba.size(); ++i) near(ba[i].first, *ba[i].second, *bb[i].second, 1e-5);
}

// Against the per-lego strategy (the merged block is the same function to 1e-5 only).
TrainConfig per_lego(const TrainConfig& c, std::vector<std::string> overrides = {}) {
  overrides.push_back("lego_strategy=per-lego");
  return parse_config(c.yaml, overrides, "per-lego.yaml");
}

TEST_F(Simt, TaskBatchingIsThePassesOneByOne) { check_batching_matches(per_lego(tiny_config(1))); }
TEST_F(Simt, TaskBatchingIsThePassesOneByOneTopTwo) { check_batching_matches(per_lego(tiny_config(1, 2))); }
TEST_F(Simt, TaskBatchingIsThePassesOneByOneWithASharedLego) {
  check_batching_matches(per_lego(tiny_config(1, 2), {"model.shared_legos=1"}));
}

TEST_F(Simt, BenchStepOnSyntheticDataOpensNoDataSet) {
  const TrainConfig c = parse_config(
      tiny_config(1).yaml,
      {"tasks.bars.dataset=/nonexistent/a", "tasks.det.dataset=/nonexistent/b", "tasks.seg.dataset=/nonexistent/c"},
      "synthetic.yaml");
  const SyntheticData d = parse_synthetic("24x20x3:5");
  EXPECT_EQ(d.height, 24);
  EXPECT_EQ(d.width, 20);
  EXPECT_EQ(d.classes, 5);
  EXPECT_EQ(parse_synthetic("224x224x3").classes, 1000);
  const StepBench r = bench_step(c, 0, 1, &d);
  EXPECT_EQ(r.device, "host");
  EXPECT_GT(r.sgemm_gflops, 0.0);
  ASSERT_EQ(r.tasks.size(), 3u);
  for (const auto& t : r.tasks) EXPECT_GT(t.gflop, 0.0) << t.name;
  for (const char* bad : {"224x224", "224x224x2", "0x4x1", "8x8x1:0", "8x8x1:3x", "axbxc"}) {
    try {
      (void)parse_synthetic(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--synthetic"), std::string::npos) << e.what();
    }
  }
}

// A SIMT step's host syncs and launches, counted on every device (core/counters.hpp), so this host test
// sees what a GPU step would wait for. The per-lego strategy, which CUDA runs, waits twice per step:
// the optimizer's gradient norm, and end_step's one read of the routers and every pass's losses.
// Nothing routed is read back mid-step (router logits from the host copy, gate gradients and router
// gradients on the device, the grey stem's channel sum a GEMM), for gppf-mini and gppf-r50.
TEST_F(Simt, AStepMakesAtMostTwoHostSyncs) {
  const std::vector<std::pair<std::string, std::string>> cases = {{"gppf-mini", "40x40x1:5"},
                                                                  {"gppf-r50", "64x64x3:5"}};
  for (const auto& [backbone, shape] : cases) {
    const std::string yaml =
        str("steps: 3\nthreads: 1\nlego_strategy: per-lego\n", "optimizer: {type: sgd, lr: 0.01, max_grad_norm: 5.0}\n",
            "model: {backbone: ", backbone, ", routing: {warmup: soft, warmup_steps: 1}}\n",
            test::tiny_tasks_yaml("/nonexistent"));
    const TrainConfig c =
        parse_config(yaml, {"tasks.bars.batch_size=2", "tasks.det.batch_size=2", "tasks.seg.batch_size=2"}, "s.yaml");
    const SyntheticData d = parse_synthetic(shape);
    const StepBench r = bench_step(c, 1, 2, &d);  // the timed steps route top-k, the warm-up all legos
    EXPECT_GE(r.syncs_per_step, 1) << backbone;
    EXPECT_LE(r.syncs_per_step, 2) << backbone;
    EXPECT_GT(r.launches_per_step, 100) << backbone;
    EXPECT_NE(r.to_table().find("host syncs"), std::string::npos);
  }
}

// Task batching's launches, counted on the host as for a GPU, at the issue's shape
// (configs/r50-bench-4x64.yaml: gppf-r50, 4 tasks of one input shape, k = 2 of 4 legos). Each lego
// runs once per layer instead of once per task that chose it, its BNs in one call per stage with the
// other legos' and its 1x1 convolutions in one grouped GEMM: under half the launches of the per-task
// step, within 1.5x of the dense network (docs/PERFORMANCE.md, "The GPU step").
TEST_F(Simt, TaskBatchingLaunchesWithinOneAndAHalfOfDense) {
  auto launches = [](const std::string& batching, int legos, int top_k) {
    std::vector<std::string> set = {"device=host",
                                    "precision=fp32",
                                    "threads=1",
                                    "lego_strategy=per-lego",
                                    "task_batching=" + batching,
                                    str("model.legos=", legos),
                                    str("model.top_k=", top_k)};
    for (int t = 0; t < 4; ++t) set.push_back(str("tasks.task", t, ".batch_size=2"));
    const TrainConfig c = load_config(std::string(GPPF_SOURCE_DIR) + "/configs/r50-bench-4x64.yaml", set);
    const SyntheticData d = parse_synthetic("64x64x3:5");
    const StepBench r = bench_step(c, 1, 1, &d);
    EXPECT_LE(r.syncs_per_step, 2) << batching;
    return r.launches_per_step;
  };
  const std::int64_t per_task = launches("off", 4, 2), batched = launches("on", 4, 2);
  const std::int64_t dense = launches("off", 1, 1), dense_batched = launches("on", 1, 1);
  EXPECT_LT(batched, per_task * 11 / 20) << per_task;
  EXPECT_LT(batched, dense) << dense;
  EXPECT_LT(dense_batched, dense);
  // The issue's target: within 1.5x of our dense network at the same batch (run the same way).
  EXPECT_LE(batched * 2, dense_batched * 3) << dense_batched;
}

// Routes every task of every layer to legos 0 .. top_k - 1: the others must stay untouched.
void check_unused_legos_untouched(const TrainConfig& c) {
  const auto specs = specs_of(c);
  Network net(c, specs);
  for (auto* layer : net.backbone().lego_layers())
    for (int t = 0; t < 3; ++t) {
      float* z = layer->router(t).value.data_as<float>();
      z[0] = 1.0f, z[1] = 0.0f, z[2] = -1.0f;
    }
  net.parameters_changed();
  for (int t = 0; t < 3; ++t) net.train_step(t, first_batch(c.tasks[static_cast<std::size_t>(t)]), 0);
  int untouched = 0;
  for (auto* p : net.parameters()) {
    const bool unused = p->owner.kind == nn::Owner::Kind::Lego && p->owner.lego >= c.backbone.top_k;
    EXPECT_EQ(p->touched, !unused) << p->name;
    untouched += unused;
  }
  EXPECT_GT(untouched, 0);
}

TEST_F(Simt, LegosNoTaskUsedAreUntouched) { check_unused_legos_untouched(tiny_config(1)); }
TEST_F(Simt, LegosNoTaskUsedAreUntouchedTopTwo) { check_unused_legos_untouched(tiny_config(1, 2)); }

TEST_F(Simt, TinyRunLearnsAndWritesItsRunDirectory) {
  const TrainConfig c = tiny_config(80);
  const fs::path run = s_dir / "run";
  const std::int64_t stale = nn::LegoLayer::stale_router_reads();
  const TrainSummary s = run_training(c, {run.string(), ""});
  EXPECT_EQ(s.steps, 80);
  // Training and evaluation routed by current host copies of the routers, as a GPU run would.
  EXPECT_EQ(nn::LegoLayer::stale_router_reads(), stale);
  EXPECT_GT(s.metrics.at("bars").at("top1"), 0.9);
  // metrics.jsonl: the classification loss of the last window is below that of the first.
  std::ifstream in(run / "metrics.jsonl");
  std::string line;
  double first = -1, last = -1;
  bool has_eval = false, has_routing = false;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.contains("step") && j.contains("task") && j.contains("split")) << line;
    if (j["split"] == "train" && j["task"] == "bars") {
      if (first < 0) first = j["loss"].get<double>();
      last = j["loss"].get<double>();
    }
    has_eval |= j["split"] == "val";
    has_routing |= j["split"] == "routing";
  }
  EXPECT_GT(first, 0);
  EXPECT_LT(last, 0.5 * first);
  EXPECT_TRUE(has_eval);
  EXPECT_TRUE(has_routing);
  std::ifstream sf(run / "summary.json");
  const auto summary = nlohmann::json::parse(sf);
  EXPECT_EQ(summary["steps"], 80);
  EXPECT_EQ(summary["tasks"]["det"]["type"], "detection");
  for (const char* k : {"map50", "map"}) {
    const double v = summary["tasks"]["det"]["metrics"][k].get<double>();
    EXPECT_GE(v, 0.0);
    EXPECT_LE(v, 1.0);
  }
  EXPECT_TRUE(summary["tasks"]["seg"]["metrics"].contains("miou"));
}

// GPPF-ViT through the trainer: the three task types on one token map (bars 8x8 -> 2x2 tokens, the
// squares 16x16 -> 4x4, position embeddings interpolated), routers refreshed, the run directory
// written, and a resume that continues the run bit for bit. Classification pools the token map
// (grid) or reads a class token (token: the dense heads still read the map, the checkpoint holds
// the token).
TEST_F(Simt, TinyVitRunLearnsAndResumes) {
  for (const char* pool : {"grid", "token"}) {
    SCOPED_TRACE(str("model.vit.pool: ", pool));
    run_tiny_vit(pool);
  }
}

void Simt::run_tiny_vit(const std::string& pool) {
  std::vector<std::string> vit = {"model.backbone=gppf-vit", "model.vit.patch=4",  "model.vit.dim=16",
                                  "model.vit.depth=2",       "model.vit.heads=2",  "model.neck.first_stage=0",
                                  "optimizer.type=adamw",    "optimizer.lr=0.003", "model.vit.pool=" + pool};
  // A class token first has to learn what to attend to: bars' loss stays flat for ~100 steps, then
  // falls as fast as with pooling.
  const int steps = pool == "token" ? 200 : 60;
  std::string yaml = tiny_config(steps).yaml;
  // The residual stages do not apply to a ViT.
  const auto at = yaml.find("  stem_channels: 4\n  stages: [[8, 1, 1], [8, 1, 2]]\n");
  ASSERT_NE(at, std::string::npos);
  yaml.erase(at, std::string("  stem_channels: 4\n  stages: [[8, 1, 1], [8, 1, 2]]\n").size());
  vit.push_back(str("checkpoint_every=", steps / 2));
  const TrainConfig c = parse_config(yaml, vit, "vit.yaml");
  ASSERT_TRUE(c.backbone.vit);
  const fs::path run = s_dir / ("vit-run-" + pool);
  const std::int64_t stale = nn::Router::stale_reads();
  const TrainSummary s = run_training(c, {run.string(), ""});
  EXPECT_EQ(s.steps, steps);
  EXPECT_EQ(nn::Router::stale_reads(), stale);
  EXPECT_GT(s.metrics.at("bars").at("top1"), 0.8);
  std::ifstream in(run / "metrics.jsonl");
  std::string line;
  bool routing = false;
  while (std::getline(in, line)) routing |= nlohmann::json::parse(line)["split"] == "routing";
  EXPECT_TRUE(routing);
  // Resumed from half-way: the straight run's end point.
  const fs::path again = s_dir / ("vit-resumed-" + pool);
  char name[32];
  std::snprintf(name, sizeof name, "step-%08d.h5", steps / 2);
  const fs::path ckpt = run / "checkpoints" / name;
  EXPECT_EQ(io::h5::File::open(ckpt.string()).open_group("params").has("cls_token"), pool == "token");
  const TrainSummary resumed = run_training(c, {again.string(), ckpt.string()});
  EXPECT_EQ(resumed.metrics, s.metrics);
}

// A ViT's detection and segmentation heads read the simple feature pyramid of the token map
// (model.neck.pyramid, default x2, x1, x1/2); [] gives the token map alone; bad scales name the key.
TEST_F(Simt, VitDenseHeadsReadTheSimplePyramid) {
  std::string yaml = tiny_config(1).yaml;
  const std::string stages = "  stem_channels: 4\n  stages: [[8, 1, 1], [8, 1, 2]]\n";
  yaml.erase(yaml.find(stages), stages.size());
  const std::vector<std::string> vit = {"model.backbone=gppf-vit", "model.vit.patch=4", "model.vit.dim=16",
                                        "model.vit.depth=1", "model.vit.heads=2"};
  auto names = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), vit.begin(), vit.end());
    const TrainConfig c = parse_config(yaml, extra, "vit.yaml");
    Network net(c, specs_of(c));
    std::set<std::string> out;
    for (auto* p : net.parameters()) out.insert(p->name);
    return out;
  };
  // The detection head's neck starts at x1 (level 1): its x2 level is not built; the segmentation
  // head's skip reads it.
  const auto with = names({"model.neck.first_stage=1"});
  EXPECT_FALSE(with.count("head.det.pyramid.x2.up0.weight"));
  EXPECT_TRUE(with.count("head.seg.pyramid.x2.up0.weight"));
  EXPECT_TRUE(with.count("head.seg.skip.weight"));
  EXPECT_TRUE(names({"model.neck.first_stage=0"}).count("head.det.pyramid.x2.up0.weight"));
  for (const auto& n : names({"model.neck.pyramid=[]", "model.neck.first_stage=0"}))
    EXPECT_EQ(n.find(".pyramid."), std::string::npos) << n;
  auto error_of = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), vit.begin(), vit.end());
    try {
      parse_config(yaml, extra, "vit.yaml");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of({"model.neck.pyramid=[1.5]"}).find("model.neck.pyramid"), std::string::npos);
  EXPECT_NE(error_of({"model.neck.pyramid=[0.5, 1]"}).find("fine to coarse"), std::string::npos);
  EXPECT_NE(error_of({"model.neck.pyramid=[32]"}).find("model.neck.pyramid"), std::string::npos);
  EXPECT_NE(error_of({"model.neck.first_stage=3"}).find("model.neck.first_stage"), std::string::npos);
  EXPECT_NE(error_of({"model.vit.pool=max"}).find("model.vit.pool"), std::string::npos);
  // model.vit.pool: mean: the classification head reads the 16 channels' mean alone (grid: 5 x 16);
  // token: the class token's 16.
  for (const auto& [pool, inputs] : {std::pair<std::string, std::int64_t>{"grid", 80}, {"mean", 16}, {"token", 16}}) {
    std::vector<std::string> sets = vit;
    sets.push_back("model.vit.pool=" + pool);
    const TrainConfig c = parse_config(yaml, sets, "vit.yaml");
    Network net(c, specs_of(c));
    int found = 0;
    for (auto* p : net.parameters()) {
      if (p->name != "head.bars.fc.weight") continue;
      EXPECT_EQ(p->value.dim(1), inputs) << pool;
      ++found;
    }
    EXPECT_EQ(found, 1);
    std::set<std::string> params;
    for (auto* p : net.parameters()) params.insert(p->name);
    EXPECT_EQ(params.count("cls_token"), pool == "token" ? 1u : 0u);
  }
  try {
    parse_config(tiny_config(1).yaml, {"model.neck.pyramid=[2, 1]"}, "mini.yaml");
    ADD_FAILURE() << "a residual backbone took model.neck.pyramid";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is for model.backbone: gppf-vit"), std::string::npos) << e.what();
  }
}

TEST_F(Simt, DescribeListsLayersTasksAndParameterCounts) {
  const TrainConfig c = tiny_config(1);
  const std::string d = describe_network(c, open_tasks(c).specs);
  for (const char* want : {"stem", "stage1.block0", "stage2.block0", "bars", "det", "seg", "classification"})
    EXPECT_NE(d.find(want), std::string::npos) << want << " missing from\n" << d;
  Network net(c, specs_of(c));
  std::int64_t total = 0;
  for (auto* p : net.parameters()) total += p->value.numel();
  EXPECT_NE(d.find(str("parameters: ", total, " in all")), std::string::npos) << d;
  // The 16x16 scene path costs more than the 8x8 bars path.
  EXPECT_GT(net.path_macs(1), net.path_macs(0));
}

TEST_F(Simt, ContextLevelsFollowTheTaskKey) {
  auto context_convs = [](Network& net, const std::string& head) {
    int n = 0;
    for (auto* p : net.parameters()) n += p->name.rfind(head + ".neck.context", 0) == 0 && p->value.ndim() == 4;
    return n;
  };
  TrainConfig c = tiny_config(1);
  Network plain(c, specs_of(c));
  EXPECT_EQ(context_convs(plain, "head.det"), 0);
  EXPECT_EQ(context_convs(plain, "head.seg"), 3);
  c.tasks[1].context_levels = 2;
  c.tasks[2].context_levels = 1;
  Network wide(c, specs_of(c));
  EXPECT_EQ(context_convs(wide, "head.det"), 2);
  EXPECT_EQ(context_convs(wide, "head.seg"), 1);
  EXPECT_GT(wide.path_macs(1), plain.path_macs(1));
}

TEST_F(Simt, ANonFiniteLossStopsTheRunNamingTaskAndStep) {
  TrainConfig c = tiny_config(20);
  c.optimizer.lr = 1e30f;  // the first update overflows the weights
  c.schedule.base_lr = 1e30f;
  try {
    run_training(c, {(s_dir / "nan-run").string(), ""});
    FAIL() << "expected the run to stop";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("the loss is"), std::string::npos) << what;
    EXPECT_NE(what.find("task '"), std::string::npos) << what;
    EXPECT_NE(what.find("at step "), std::string::npos) << what;
    EXPECT_NE(what.find("lower optimizer.lr"), std::string::npos) << what;
  }
}

TEST_F(Simt, BadDatasetPairingIsNamed) {
  TrainConfig c = tiny_config(1);
  c.tasks[0].dataset = (s_dir / "squares").string();
  try {
    specs_of(c);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("task 'bars'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gppf::train
