// The MpiExecutor of a one-rank job against the LocalExecutor: the same plan, the same checkpoint
// names, and bitwise the same parameters after a few SIMT steps (the all-reduces of one rank copy).
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "src/train/distributed.hpp"
#include "src/train/executor_local.hpp"
#include "src/train/executor_mpi.hpp"
#include "src/train/network.hpp"
#include "tests/common/datasets.hpp"
#include "tests/common/util.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> names(const CheckpointTensors& t) {
  std::vector<std::string> out;
  for (auto* p : t.params) out.push_back(p->name);
  for (const auto& b : t.buffers) out.push_back(b.first);
  for (const auto& o : t.optimizer) out.push_back(o.first);
  std::sort(out.begin(), out.end());  // the MPI optimizer holds its parameters grouped by owner
  return out;
}

// `device`: where both networks train; on a GPU the MPI executor's gradient sums and expert exchange
// are NCCL communicators (of one rank here), and results agree to rounding (`tolerance`).
void one_rank_equals_local(const std::string& device, double tolerance) {
  const fs::path dir = fs::temp_directory_path() / ("gppf-mpi-executor-" + std::to_string(::getpid()));
  test::write_bars((dir / "bars").string(), 64, 16, 1);
  test::write_squares((dir / "squares").string(), 32, 8, 2);
  const TrainConfig c = parse_config(
      str("threads: 1\noptimizer: {type: sgd, lr: 0.05, momentum: 0.9, max_grad_norm: 1.0}\n"
          "model: {backbone: gppf-mini, stem_channels: 4, stages: [[8, 1, 1], [8, 1, 2]], legos: 3, top_k: 1,"
          " routing: {warmup: none, balance_weight: 0.01}, neck: {first_stage: 0, channels: 8}}\n",
          test::tiny_tasks_yaml(dir.string())),
      {"device=" + device}, "executor.yaml");
  const TaskData data = open_tasks(c);
  Network local_net(c, data.specs), mpi_net(c, data.specs);
  LocalExecutor local(local_net);
  MpiExecutor mpi(Distributed::create(c, mpi_net, true));
  auto local_opt = optim::Optimizer::create(c.optimizer, local.held_parameters());
  auto mpi_opt = optim::Optimizer::create(c.optimizer, mpi.held_parameters());
  mpi.attach(*mpi_opt);
  EXPECT_EQ(names(mpi.checkpoint_tensors(mpi_net, *mpi_opt)), names(local.checkpoint_tensors(local_net, *local_opt)));
  std::vector<io::Batch> batches;
  std::vector<int> all;
  for (std::size_t t = 0; t < c.tasks.size(); ++t) {
    batches.push_back(test::first_batch(c.tasks[t]));
    all.push_back(static_cast<int>(t));
    EXPECT_TRUE(mpi.runs(static_cast<int>(t)) && mpi.reports(static_cast<int>(t)));
  }
  for (int step = 0; step < 3; ++step) {
    auto passes = [&](Network& net) {
      return [&](const std::vector<int>& tasks) {
        std::vector<PendingLoss> out;
        for (int t : tasks) out.push_back(net.train_step(t, batches[static_cast<std::size_t>(t)], step));
        return out;
      };
    };
    simt_step(local, local_net, *local_opt, step, 0.05f, all, passes(local_net));
    simt_step(mpi, mpi_net, *mpi_opt, step, 0.05f, all, passes(mpi_net));
  }
  const auto a = local_net.parameters(), b = mpi_net.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::vector<float> va = a[i]->value.to(Device::host()).to_float_vector(),
                             vb = b[i]->value.to(Device::host()).to_float_vector();
    if (tolerance == 0.0) {
      EXPECT_EQ(va, vb) << a[i]->name;
      continue;
    }
    ASSERT_EQ(va.size(), vb.size());
    for (std::size_t j = 0; j < va.size(); ++j)
      EXPECT_NEAR(va[j], vb[j], tolerance * (1.0 + std::abs(va[j]))) << a[i]->name << "[" << j << "]";
  }
  fs::remove_all(dir);
}

TEST(MpiExecutor, OneRankEqualsTheLocalExecutor) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world != 1) GTEST_SKIP() << "a one-rank job only";
  one_rank_equals_local("host", 0.0);
}

// The one-GPU training path through the MPI executor and its NCCL communicators
// (scripts/device-check.sh runs it under mpirun -np 1 on a lent GPU).
TEST(MpiExecutor, OneRankOnTheGpuThroughNcclEqualsTheLocalExecutor) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world != 1) GTEST_SKIP() << "a one-rank job only";
  GPPF_REQUIRE_GPU();
  one_rank_equals_local("cuda", 1e-5);
}

}  // namespace
}  // namespace gppf::train
