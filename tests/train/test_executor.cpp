// The executors on their own: a LocalExecutor plans every task onto its one process, runs each
// active task once per step in order, keeps every tensor in its checkpoints and evaluates every task
// on every split as evaluate_task does; without MPI make_executor gives one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "src/train/executor.hpp"
#include "src/train/executor_local.hpp"
#include "src/train/network.hpp"
#include "src/train/trainer.hpp"
#include "tests/common/datasets.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;

class Executors : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-executor-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    test::write_bars((s_dir / "bars").string(), 64, 32, 1);
    test::write_squares((s_dir / "squares").string(), 32, 16, 2);
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }
  static TrainConfig config() {
    return parse_config(
        str("steps: 2\nthreads: 1\nbn_calibration_batches: 2\n"
            "model: {backbone: gppf-mini, stem_channels: 4, stages: [[8, 1, 1], [8, 1, 2]], legos: 3, top_k: 1,"
            " routing: {warmup: none}, neck: {first_stage: 0, channels: 8}}\n",
            test::tiny_tasks_yaml(s_dir.string())),
        {}, "executor.yaml");
  }
  static fs::path s_dir;
};
fs::path Executors::s_dir;

TEST_F(Executors, WithoutMpiTheFactoryGivesALocalExecutorThatPlansEveryTask) {
  const TrainConfig c = config();
  const TaskData data = open_tasks(c);
  Network net(c, data.specs);
  const std::unique_ptr<Executor> ex = make_executor(c, net, false);
  ASSERT_NE(dynamic_cast<LocalExecutor*>(ex.get()), nullptr);
  EXPECT_TRUE(ex->root());
  EXPECT_EQ(ex->world(), 1);
  EXPECT_EQ(ex->shares(), 1);
  EXPECT_TRUE(ex->describe(net).empty());
  for (int t = 0; t < static_cast<int>(data.specs.size()); ++t) {
    EXPECT_TRUE(ex->runs(t));
    EXPECT_TRUE(ex->reports(t));
  }
  EXPECT_EQ(ex->held_parameters(), net.parameters());
  EXPECT_EQ(ex->agree_max({3, 1}, "test"), (std::vector<int>{3, 1}));
  std::vector<nlohmann::json> entries{1, nullptr, "x"};
  ex->share(entries, "test");
  EXPECT_EQ(entries, (std::vector<nlohmann::json>{1, nullptr, "x"}));
}

TEST_F(Executors, LocalStepRunsEachActiveTaskOnceInOrderAndCheckpointsEverything) {
  const TrainConfig c = config();
  const TaskData data = open_tasks(c);
  Network net(c, data.specs);
  LocalExecutor ex(net);
  auto optimizer = optim::Optimizer::create(c.optimizer, ex.held_parameters());
  std::vector<int> ran;
  const std::vector<int> active{2, 0};
  const StepResult r = simt_step(ex, net, *optimizer, 0, 0.01f, active, [&](const std::vector<int>& tasks) {
    std::vector<io::Batch> batches;
    for (int t : tasks) {
      ran.push_back(t);
      batches.push_back(test::first_batch(c.tasks[static_cast<std::size_t>(t)]));
    }
    return net.train_tasks(tasks, batches, 0);
  });
  EXPECT_EQ(ran, active);
  ASSERT_EQ(r.losses.size(), 2u);  // the passes' losses, read with the step's one sync, in pass order
  EXPECT_EQ(r.losses[0].task, 2);
  EXPECT_EQ(r.losses[1].task, 0);
  for (const TaskLoss& l : r.losses) EXPECT_TRUE(std::isfinite(l.total) && l.total > 0) << l.task;
  const CheckpointTensors saved = ex.checkpoint_tensors(net, *optimizer);
  EXPECT_EQ(saved.params, net.parameters());
  EXPECT_EQ(saved.buffers.size(), net.buffers().size());
  EXPECT_EQ(saved.optimizer.size(), optimizer->state().size());
  EXPECT_TRUE(ex.exact_resume());
  EXPECT_EQ(ex.comm(), MPI_COMM_NULL);
}

TEST_F(Executors, LocalEvaluationIsEvaluateTaskOfEverySplitAfterCalibration) {
  const TrainConfig c = config();
  const TaskData data = open_tasks(c);
  Network net(c, data.specs), reference(c, data.specs);
  LocalExecutor ex(net);
  const EvalResults r = ex.evaluate(net, data.datasets, c, {0, {"test", "train"}, 1});
  ASSERT_EQ(r.size(), 2u);
  for (std::size_t t = 0; t < data.specs.size(); ++t) {
    calibrate_task(reference, static_cast<int>(t), data.datasets[t], c);
    for (std::size_t s = 0; s < 2; ++s) {
      std::int64_t samples = 0;
      const auto m =
          evaluate_task(reference, static_cast<int>(t), data.datasets[t], c, s == 0 ? "test" : "train", 1, &samples);
      EXPECT_EQ(r[s][t].metrics, m) << "task " << t << " split " << s;
      EXPECT_EQ(r[s][t].samples, samples);
      EXPECT_GT(samples, 0);
    }
  }
}

}  // namespace
}  // namespace gppf::train
