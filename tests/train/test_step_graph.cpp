// cuda_graphs: on (core/graph.hpp, Network::run_graphed): the passes of a step captured once and
// launched again while the tasks, the routing and the input shapes stay the same. On the host the
// capture is a recording of the kernel calls, and a launch reruns them with the captured arguments,
// as a CUDA graph does. So a value that changes from step to step but was passed as an argument
// (a gate, a probability, an input's address) would replay stale, and these runs would differ.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "core/graph.hpp"
#include "io/dataset.hpp"
#include "src/nn/lego_strategy.hpp"
#include "src/optim/optimizer.hpp"
#include "src/train/network.hpp"
#include "src/train/trainer.hpp"
#include "tests/common/checkpoint_compare.hpp"
#include "tests/common/datasets.hpp"
#include "tests/common/files.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;

class StepGraph : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-step-graph-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    test::write_bars((s_dir / "bars").string(), 128, 40, 1);
    test::write_squares((s_dir / "squares").string(), 64, 20, 2);
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }

  // Noisy routing for 4 steps (a routing drawn every step), then the top-2 of 3 legos; every task
  // type (the detection task's first pass encodes its targets in the pass: run eagerly); AdamW with
  // clipping; an evaluation in between (BN calibration and inference outside the graph).
  static TrainConfig config(const std::vector<std::string>& overrides) {
    const std::string yaml = str(R"(
steps: 12
log_every: 1
threads: 1
eval_every: 6
eval_batches: 1
final_eval_batches: 1
bn_calibration_batches: 2
checkpoint_every: 12
lego_strategy: per-lego
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.01, max_grad_norm: 1.0}
schedule: {type: cosine, warmup_steps: 2}
model:
  backbone: gppf-mini
  stem_channels: 4
  stages: [[8, 1, 1], [8, 1, 2]]
  legos: 3
  top_k: 2
  routing: {warmup: noisy, warmup_steps: 4}
  neck: {first_stage: 0, channels: 8}
tasks:
  - {name: bars, type: classification, dataset: )",
                                 (s_dir / "bars").string(), R"(, batch_size: 16}
  - {name: det, type: detection, dataset: )",
                                 (s_dir / "squares").string(), R"(, batch_size: 8}
  - {name: seg, type: segmentation, dataset: )",
                                 (s_dir / "squares").string(), R"(, batch_size: 8}
)");
    return parse_config(yaml, overrides, "step-graph.yaml");
  }

  // Trains with and without the graph; both runs must agree bit for bit.
  static void expect_same_run(const std::string& name, const std::vector<std::string>& overrides) {
    const fs::path eager = s_dir / (name + "-eager"), graphed = s_dir / (name + "-graphed");
    std::vector<std::string> on = overrides;
    on.push_back("cuda_graphs=on");
    const TrainSummary e = run_training(config(overrides), TrainOptions{eager.string(), ""});
    const TrainSummary g = run_training(config(on), TrainOptions{graphed.string(), ""});
    EXPECT_EQ(e.graph_launches, 0);
    // After the warm-up: one eager step, a capture, launches to the end.
    EXPECT_GE(g.graph_launches, 5);
    EXPECT_GE(g.graph_captures, 1);
    EXPECT_LT(g.graph_captures, g.graph_launches);
    EXPECT_EQ(g.metrics, e.metrics);
    EXPECT_EQ(g.val, e.val);
    EXPECT_EQ(test::metrics_lines(graphed), test::metrics_lines(eager));
    const auto pe = test::load_checkpoint_params(test::ckpt(eager, 12));
    const auto pg = test::load_checkpoint_params(test::ckpt(graphed, 12));
    ASSERT_EQ(pe.size(), pg.size());
    int differ = 0;
    for (const auto& [n, v] : pe) {
      const auto it = pg.find(n);
      ASSERT_NE(it, pg.end()) << n;
      if (it->second != v) ++differ;
    }
    EXPECT_EQ(differ, 0) << "of " << pe.size() << " parameter tensors";
  }

  static fs::path s_dir;
};
fs::path StepGraph::s_dir;

TEST_F(StepGraph, LaunchesTrainBitwiseAsTheEagerPassesPerTask) { expect_same_run("per-task", {"task_batching=off"}); }

TEST_F(StepGraph, LaunchesTrainBitwiseAsTheEagerPassesTaskBatched) { expect_same_run("batched", {"task_batching=on"}); }

TEST_F(StepGraph, ConfigsThatCannotBeCapturedAreRefusedInOneLine) {
  EXPECT_THROW(
      {
        try {
          (void)config({"cuda_graphs=maybe"});
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("key 'cuda_graphs'"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  EXPECT_THROW((void)config({"cuda_graphs=on", "lego_strategy=merged"}), Error);
  EXPECT_THROW((void)config({"cuda_graphs=on", "deterministic=true"}), Error);
}

// The routing changes (here: the router's logits are set to prefer other legos): the next step runs
// eagerly and the one after it is captured again; until then the old graph is not launched.
TEST_F(StepGraph, ARoutingChangeIsCapturedAgain) {
  TrainConfig c = config({"cuda_graphs=on", "task_batching=off"});
  c.tasks.resize(1);
  std::vector<TaskSpec> specs;
  for (const auto& t : c.tasks) specs.push_back(resolve_task(t, io::Dataset::open(t.dataset).manifest()));
  Network net(c, specs);
  auto opt = optim::Optimizer::create(c.optimizer, net.parameters());
  const io::Batch b = test::first_batch(c.tasks[0]);
  auto step = [&](std::int64_t s) {
    std::vector<StagedBatch> one;
    one.push_back(net.stage(0, b));
    const std::vector<PendingLoss> p = net.train_staged(std::move(one), s);
    opt->step(0.001f, net.stream());
    return net.end_step(p);
  };
  for (std::int64_t s = 0; s < 8; ++s) (void)step(s);
  const Network::GraphStats before = net.graph_stats();
  EXPECT_GE(before.launches, 3);  // steps 5-7 at least: the routing after the warm-up holds
  EXPECT_GE(before.captures, 1);
  EXPECT_GT(before.nodes, 50u);
  EXPECT_GT(before.pool_bytes, 0u);
  // Lego 0 of every layer out of the top-2 (it had the highest logit, or not: either way a change
  // for at least one layer unless it was already out everywhere).
  std::vector<std::vector<float>> old_logits;
  for (nn::RoutedLayer* layer : net.backbone().routed_layers()) {
    Tensor& z = layer->router(0).value;
    old_logits.push_back(z.to_float_vector());
    const std::vector<float>& o = old_logits.back();
    const bool zero_chosen = o[0] >= std::min(o[1], o[2]);
    std::vector<float> flipped = {zero_chosen ? -5.0f : 5.0f, zero_chosen ? 5.0f : -5.0f, 4.0f};
    std::copy(flipped.begin(), flipped.end(), z.data_as<float>());
  }
  net.parameters_changed();
  (void)step(8);  // a new routing: eager
  EXPECT_EQ(net.graph_stats().captures, before.captures);
  EXPECT_EQ(net.graph_stats().launches, before.launches);
  (void)step(9);  // captured and launched
  (void)step(10);
  EXPECT_EQ(net.graph_stats().captures, before.captures + 1);
  EXPECT_EQ(net.graph_stats().launches, before.launches + 2);
}

// A capture that fails (here: the merged lego strategy, whose backward reads sums back, forced in
// after construction) leaves nothing half done: that step and the rest of the run train eagerly, bit
// for bit as a network without graphs.
TEST_F(StepGraph, AFailedCaptureRunsTheStepEagerlyAndTurnsGraphsOff) {
  std::vector<std::vector<TaskLoss>> losses[2];
  for (int on = 0; on < 2; ++on) {
    TrainConfig c = config({on ? "cuda_graphs=on" : "cuda_graphs=off", "task_batching=off"});
    c.tasks.resize(1);
    std::vector<TaskSpec> specs;
    for (const auto& t : c.tasks) specs.push_back(resolve_task(t, io::Dataset::open(t.dataset).manifest()));
    Network net(c, specs);
    net.backbone().set_strategy(nn::make_merged_strategy());
    auto opt = optim::Optimizer::create(c.optimizer, net.parameters());
    const io::Batch b = test::first_batch(c.tasks[0]);
    for (std::int64_t s = 4; s < 8; ++s) {  // after the routing warm-up; lr 0 keeps the routing
      std::vector<StagedBatch> one;
      one.push_back(net.stage(0, b));
      const std::vector<PendingLoss> p = net.train_staged(std::move(one), s);
      opt->step(0.0f, net.stream());
      losses[on].push_back(net.end_step(p));
    }
    EXPECT_EQ(net.graph_stats().captures, 0);
    EXPECT_EQ(net.graph_stats().launches, 0);
  }
  ASSERT_EQ(losses[0].size(), losses[1].size());
  for (std::size_t i = 0; i < losses[0].size(); ++i) EXPECT_EQ(losses[0][i][0].total, losses[1][i][0].total) << i;
}

}  // namespace
}  // namespace gppf::train
