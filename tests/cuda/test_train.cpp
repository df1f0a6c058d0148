// Training on a GPU against the host: the same network (same seeds), the same batches of three task
// types; losses, every parameter gradient, the routers' gradients, one optimizer step and the
// evaluation agree. A short `run_training` on the GPU checkpoints, resumes and is read on the host.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/cuda_runtime.hpp"
#include "io/dataset.hpp"
#include "io/loader.hpp"
#include "kernels/common.hpp"
#include "src/optim/optimizer.hpp"
#include "src/train/bench_step.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/network.hpp"
#include "src/train/trainer.hpp"
#include "tests/common/datasets.hpp"
#include "tests/common/util.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;

class TrainCuda : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-train-cuda-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    test::write_bars((s_dir / "bars").string(), 128, 32, 1);
    test::write_squares((s_dir / "squares").string(), 64, 16, 2);
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }
  void TearDown() override { kernels::set_allow_tf32(false); }

  // Routing warm-up on (soft: every lego runs with softmax gates), so the router gradient path and
  // the per-lego path are both exercised; balance on.
  static TrainConfig config(const std::string& device, int steps = 1, const std::string& precision = "fp32") {
    const std::string yaml = str(R"(
steps: )",
                                 steps, R"(
precision: )",
                                 precision, R"(
device: )",
                                 device, R"(
log_every: 2
threads: 1
bn_calibration_batches: 2
optimizer: {type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0001}
schedule: {type: constant}
model:
  backbone: gppf-mini
  stem_channels: 4
  stages: [[8, 1, 1], [8, 1, 2]]
  legos: 3
  top_k: 2
  routing: {warmup: soft, warmup_steps: 1, balance_weight: 0.01}
  neck: {first_stage: 0, channels: 8}
)",
                                 test::tiny_tasks_yaml(s_dir.string()));
    return parse_config(yaml, {}, "tiny-" + device + ".yaml");
  }

  static fs::path s_dir;
};
fs::path TrainCuda::s_dir;

using test::first_batch;

// Largest |a - b| over max(|b|) of the tensor, so that near-zero entries do not dominate.
double scaled_error(const Tensor& a, const Tensor& b) {
  const auto x = a.to_float_vector(), y = b.to_float_vector();
  double err = 0, scale = 1e-6;
  for (std::size_t i = 0; i < x.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(x[i]) - y[i]));
    scale = std::max(scale, std::abs(static_cast<double>(y[i])));
  }
  return err / scale;
}

TEST_F(TrainCuda, StepsGradientsUpdateAndEvaluationMatchTheHost) {
  GPPF_REQUIRE_GPU();
  const TrainConfig hc = config("host"), dc = config("cuda");
  const TaskData data = open_tasks(hc);
  Network host(hc, data.specs), dev(dc, data.specs);
  ASSERT_TRUE(dev.device().is_cuda());
  auto hp = host.parameters(), dp = dev.parameters();
  ASSERT_EQ(hp.size(), dp.size());
  for (std::size_t i = 0; i < hp.size(); ++i) {
    ASSERT_TRUE(dp[i]->value.device().is_cuda()) << dp[i]->name;
    ASSERT_EQ(hp[i]->value.to_float_vector(), dp[i]->value.to_float_vector()) << dp[i]->name;
  }

  std::vector<io::Batch> batches;
  for (const auto& t : hc.tasks) batches.push_back(first_batch(t));
  std::vector<int> all = {0, 1, 2};
  auto ho = optim::Optimizer::create(hc.optimizer, hp);
  auto dopt = optim::Optimizer::create(dc.optimizer, dp);
  for (std::int64_t step = 0; step < 2; ++step) {  // step 0: soft warm-up (all legos); step 1: top-2
    for (int t : all) {
      const TaskLoss a = host.read_loss(host.train_step(t, batches[static_cast<std::size_t>(t)], step));
      const TaskLoss b = dev.read_loss(dev.train_step(t, batches[static_cast<std::size_t>(t)], step));
      EXPECT_NEAR(b.total, a.total, 1e-4 * std::max(1.0f, std::abs(a.total))) << "task " << t << " step " << step;
      for (const auto& [k, v] : a.parts) EXPECT_NEAR(b.parts.at(k), v, 1e-4 * std::max(1.0f, std::abs(v))) << k;
    }
    EXPECT_NEAR(dev.apply_balance(all), host.apply_balance(all), 1e-5);
    int checked = 0;
    for (std::size_t i = 0; i < hp.size(); ++i) {
      ASSERT_EQ(dp[i]->touched, hp[i]->touched) << dp[i]->name << " step " << step;
      if (!hp[i]->touched) continue;
      EXPECT_LT(scaled_error(dp[i]->grad, hp[i]->grad), 2e-3) << dp[i]->name << " step " << step;
      ++checked;
    }
    EXPECT_GT(checked, 20);
    ho->step(0.05f);
    dopt->step(0.05f, dev.stream());
    host.parameters_changed();  // step 1 routes by the updated routers (simt_step does this)
    dev.parameters_changed();
    for (std::size_t i = 0; i < hp.size(); ++i)
      EXPECT_LT(scaled_error(dp[i]->value, hp[i]->value), 1e-4) << dp[i]->name << " after step " << step;
  }
  // Running statistics (buffers) followed the same batches.
  auto hb = host.buffers(), db = dev.buffers();
  ASSERT_EQ(hb.size(), db.size());
  for (std::size_t i = 0; i < hb.size(); ++i)
    EXPECT_LT(scaled_error(*db[i].second, *hb[i].second), 1e-4) << hb[i].first;
  // Evaluation on the test split: metrics from device outputs read back on the host.
  for (int t : all) {
    const auto a = evaluate_task(host, t, data.datasets[static_cast<std::size_t>(t)], hc, "test", 0);
    const auto b = evaluate_task(dev, t, data.datasets[static_cast<std::size_t>(t)], dc, "test", 0);
    for (const auto& [k, v] : a) EXPECT_NEAR(b.at(k), v, 0.05) << "task " << t << " " << k;
  }
}

// Task batching on the GPU (the default there): det and seg run the backbone as one batch through
// kernels/segments.hpp's CUDA kernels; the same step as the host's passes one by one.
TEST_F(TrainCuda, TaskBatchedStepMatchesTheHostsPassesOneByOne) {
  GPPF_REQUIRE_GPU();
  TrainConfig hc = config("host"), dc = config("cuda");
  hc.lego_strategy = "per-lego";
  hc.task_batching = "off";
  dc.task_batching = "auto";
  const TaskData data = open_tasks(hc);
  Network host(hc, data.specs), dev(dc, data.specs);
  ASSERT_TRUE(dev.batches_tasks());
  std::vector<io::Batch> batches;
  for (const auto& t : hc.tasks) batches.push_back(first_batch(t));
  const std::vector<int> all = {0, 1, 2};
  for (std::int64_t step : {0, 1}) {  // 0: soft warm-up (all legos); 1: top-2
    const auto a = host.train_tasks(all, batches, step), b = dev.train_tasks(all, batches, step);
    for (std::size_t i = 0; i < all.size(); ++i) {
      const float la = host.read_loss(a[i]).total, lb = dev.read_loss(b[i]).total;
      EXPECT_NEAR(lb, la, 1e-4 * std::max(1.0f, std::abs(la))) << "task " << all[i] << " step " << step;
    }
    auto hp = host.parameters(), dp = dev.parameters();
    for (std::size_t i = 0; i < hp.size(); ++i) {
      ASSERT_EQ(dp[i]->touched, hp[i]->touched) << dp[i]->name;
      if (hp[i]->touched) {
        EXPECT_LT(scaled_error(dp[i]->grad, hp[i]->grad), 2e-3) << dp[i]->name << " step " << step;
      }
      hp[i]->clear_grad();
      dp[i]->clear_grad();
    }
  }
  auto hb = host.buffers(), db = dev.buffers();
  for (std::size_t i = 0; i < hb.size(); ++i)
    EXPECT_LT(scaled_error(*db[i].second, *hb[i].second), 1e-4) << hb[i].first;
}

double cosine(const Tensor& a, const Tensor& b) {
  const auto x = a.to_float_vector(), y = b.to_float_vector();
  double xy = 0, xx = 0, yy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    xy += static_cast<double>(x[i]) * y[i];
    xx += static_cast<double>(x[i]) * x[i];
    yy += static_cast<double>(y[i]) * y[i];
  }
  return xx == 0 && yy == 0 ? 1.0 : xy / std::sqrt(std::max(1e-300, xx * yy));
}

// bf16 activations against the f32 host: the same step to bf16's precision (~3 significant digits),
// f32 master weights updated from f32 gradients, the first-layer gradient included.
TEST_F(TrainCuda, Bf16StepFollowsTheF32Host) {
  GPPF_REQUIRE_GPU();
  const TrainConfig hc = config("host"), dc = config("cuda", 1, "bf16");
  const TaskData data = open_tasks(hc);
  Network host(hc, data.specs), dev(dc, data.specs);
  ASSERT_EQ(dev.activation_dtype(), DType::BF16);
  auto hp = host.parameters(), dp = dev.parameters();
  int working = 0;
  for (auto* p : dp) {
    EXPECT_EQ(p->value.dtype(), DType::F32) << p->name;
    working += p->working.defined() ? 1 : 0;
  }
  EXPECT_GT(working, 10);
  std::vector<io::Batch> batches;
  for (const auto& t : hc.tasks) batches.push_back(first_batch(t));
  for (int t = 0; t < 3; ++t) {
    const TaskLoss a = host.read_loss(host.train_step(t, batches[static_cast<std::size_t>(t)], 0));
    const TaskLoss b = dev.read_loss(dev.train_step(t, batches[static_cast<std::size_t>(t)], 0));
    EXPECT_NEAR(b.total, a.total, 3e-2 * std::max(1.0f, std::abs(a.total))) << "task " << t;
  }
  int checked = 0;
  for (std::size_t i = 0; i < hp.size(); ++i) {
    ASSERT_EQ(dp[i]->touched, hp[i]->touched) << dp[i]->name;
    if (!hp[i]->touched || dp[i]->name.find(".router.") != std::string::npos) continue;
    EXPECT_EQ(dp[i]->grad.dtype(), DType::F32);
    EXPECT_GT(cosine(dp[i]->grad, hp[i]->grad), 0.98) << dp[i]->name;
    ++checked;
  }
  EXPECT_GT(checked, 20);
  auto ho = optim::Optimizer::create(hc.optimizer, hp);
  auto dopt = optim::Optimizer::create(dc.optimizer, dp);
  ho->step(0.05f);
  dopt->step(0.05f, dev.stream());
  for (std::size_t i = 0; i < hp.size(); ++i) EXPECT_LT(scaled_error(dp[i]->value, hp[i]->value), 2e-2) << dp[i]->name;
  for (int t = 0; t < 3; ++t) {
    const auto a = evaluate_task(host, t, data.datasets[static_cast<std::size_t>(t)], hc, "test", 0);
    const auto b = evaluate_task(dev, t, data.datasets[static_cast<std::size_t>(t)], dc, "test", 0);
    for (const auto& [k, v] : a) EXPECT_NEAR(b.at(k), v, 0.1) << "task " << t << " " << k;
  }
}

TEST_F(TrainCuda, RunCheckpointsResumesAndIsReadOnTheHost) {
  GPPF_REQUIRE_GPU();
  const fs::path straight = s_dir / "straight", resumed = s_dir / "resumed";
  TrainConfig c = config("cuda", 6);
  c.checkpoint_every = 3;
  c.keep_checkpoints = 5;
  const TrainSummary s = run_training(c, {straight.string(), ""});
  ASSERT_EQ(s.steps, 6);
  for (const auto& [task, m] : s.metrics)
    for (const auto& [k, v] : m) EXPECT_TRUE(std::isfinite(v)) << task << " " << k;

  // Resume from step 3 into another directory: the same weights as the straight run at step 6
  // (cuDNN may pick non-deterministic algorithms: compared to a tolerance, not bit for bit).
  fs::create_directories(resumed / "checkpoints");
  const auto ckpts = list_checkpoints(straight.string());
  ASSERT_GE(ckpts.size(), 2u);
  fs::copy_file(ckpts.front(), resumed / "checkpoints" / fs::path(ckpts.front()).filename());
  ASSERT_EQ(checkpoint_step(ckpts.front()), 3);
  (void)run_training(c, {resumed.string(), "auto"});

  const TaskData data = open_tasks(c);
  Network a(config("host"), data.specs), b(config("host"), data.specs);
  (void)read_checkpoint(find_resume_checkpoint(straight.string()), {a.parameters(), a.buffers(), {}}, {true, false});
  (void)read_checkpoint(find_resume_checkpoint(resumed.string()), {b.parameters(), b.buffers(), {}}, {true, false});
  auto ap = a.parameters(), bp = b.parameters();
  for (std::size_t i = 0; i < ap.size(); ++i) EXPECT_LT(scaled_error(bp[i]->value, ap[i]->value), 1e-3) << ap[i]->name;
  // The GPU run's checkpoint evaluated on the host reproduces the GPU run's summary.
  for (std::size_t t = 0; t < data.specs.size(); ++t) {
    const auto m = evaluate_task(a, static_cast<int>(t), data.datasets[t], config("host"), "test", 0);
    for (const auto& [k, v] : m) EXPECT_NEAR(v, s.metrics.at(data.specs[t].config.name).at(k), 0.05) << k;
  }
}

TEST_F(TrainCuda, BenchStepRunsOnSyntheticDataAndNamesTheGpu) {
  GPPF_REQUIRE_GPU();
  const SyntheticData d = parse_synthetic("32x32x3:10");
  const StepBench r = bench_step(config("cuda"), 1, 2, &d);
  EXPECT_EQ(r.device, cuda::device_name(0));
  EXPECT_EQ(r.sgemm_gflops, 0.0);
  ASSERT_EQ(r.tasks.size(), 3u);
  for (const auto& t : r.tasks) EXPECT_GT(t.samples_per_s, 0.0) << t.name;
}

TEST(TrainCudaConfig, CudaWithoutADeviceIsOneLineNamingTheKey) {
  if (cuda::available()) GTEST_SKIP() << "a GPU is present: the refusal cannot happen";
  const std::string dir = (fs::temp_directory_path() / ("gppf-nocuda-" + std::to_string(::getpid()))).string();
  test::write_bars(dir, 16, 8, 1);
  const TrainConfig c = parse_config(str("steps: 1\ndevice: cuda\ntasks:\n  - {name: bars, type: classification, "
                                         "dataset: ",
                                         dir, ", batch_size: 4}\n"),
                                     {}, "gpu.yaml");
  const TaskData data = open_tasks(c);
  try {
    Network net(c, data.specs);
    ADD_FAILURE() << "a CUDA network was built without a GPU";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("gpu.yaml: key 'device'"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gppf::train
