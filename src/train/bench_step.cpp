#include "src/train/bench_step.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "src/optim/optimizer.hpp"
#include "src/train/network.hpp"
#include "src/train/trainer.hpp"

namespace gppf::train {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double sgemm_gflops() {
  const int n = 1024;
  std::vector<float> a(static_cast<std::size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::min(best, ms_since(t0));
  }
  return 2.0 * n * n * n / (best * 1e6);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

StepBench bench_step(const TrainConfig& config, int warmup_steps, int steps) {
  GPPF_CHECK(steps >= 1 && warmup_steps >= 0, "bench step: --steps must be >= 1 and --warmup >= 0");
  if (config.threads > 0) omp_set_num_threads(config.threads);
  const auto [datasets, specs] = open_tasks(config);
  std::vector<std::unique_ptr<io::Loader>> loaders;
  for (std::size_t i = 0; i < specs.size(); ++i)
    loaders.push_back(std::make_unique<io::Loader>(datasets[i], train_loader_config(config, specs[i], i)));
  Network net(config, specs);
  auto optimizer = optim::Optimizer::create(config.optimizer, net.parameters());

  const double sgemm_before = sgemm_gflops();
  StepBench r;
  r.steps = steps;
  r.threads = omp_get_max_threads();
  // Medians over the timed steps: on a shared machine a neighbour's burst moves a mean by 20 %.
  std::vector<std::vector<double>> task_ms(specs.size());
  std::vector<double> step_ms, opt_ms;
  std::vector<int> all(specs.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  // Batches are read before timing and the loaders stopped: on a 2-core host their worker threads
  // would otherwise compete with the step's OpenMP threads, and every parallel region waits for its
  // slowest thread. This measures the step; the loader has its own benchmark (bench_loader).
  constexpr int kBatches = 4;
  std::vector<std::vector<io::Batch>> batches(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i)
    for (int b = 0; b < kBatches; ++b) batches[i].push_back(loaders[i]->next());
  loaders.clear();
  for (int s = 0; s < warmup_steps + steps; ++s) {
    const bool timed = s >= warmup_steps;
    const auto t_step = Clock::now();
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const io::Batch& batch = batches[i][static_cast<std::size_t>(s % kBatches)];
      const auto t0 = Clock::now();
      net.train_step(static_cast<int>(i), batch, s);
      if (timed) task_ms[i].push_back(ms_since(t0));
    }
    net.apply_balance(all);
    const auto t0 = Clock::now();
    optimizer->step(config.optimizer.lr);
    if (timed) {
      opt_ms.push_back(ms_since(t0));
      step_ms.push_back(ms_since(t_step));
    }
  }
  double total_gflop = 0;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    TaskBench t;
    t.name = specs[i].config.name;
    t.batch = specs[i].config.batch_size;
    t.ms = median(task_ms[i]);
    t.samples_per_s = t.batch / (t.ms / 1e3);
    t.gflop = 6.0 * static_cast<double>(net.path_macs(static_cast<int>(i))) * t.batch / 1e9;
    t.gflops = t.gflop / (t.ms / 1e3);
    total_gflop += t.gflop;
    r.tasks.push_back(t);
  }
  r.step_ms = median(step_ms);
  r.optimizer_ms = median(opt_ms);
  r.gflops = total_gflop / (r.step_ms / 1e3);
  // The machine's rate is the best seen, before and after the steps (a slow sample is the neighbours).
  r.sgemm_gflops = std::max(sgemm_before, sgemm_gflops());
  return r;
}

std::string StepBench::to_table() const {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-18s %6s %10s %12s %10s %9s\n", "task", "batch", "ms/step", "samples/s", "GFLOP",
                "GFLOP/s");
  out += line;
  for (const auto& t : tasks) {
    std::snprintf(line, sizeof line, "%-18s %6d %10.2f %12.1f %10.3f %9.1f\n", t.name.c_str(), t.batch, t.ms,
                  t.samples_per_s, t.gflop, t.gflops);
    out += line;
  }
  std::snprintf(line, sizeof line,
                "SIMT step %.2f ms (optimizer %.2f ms): %.1f GFLOP/s = %.0f %% of SGEMM (%.1f GFLOP/s), %d "
                "threads, %d steps\n",
                step_ms, optimizer_ms, gflops, 100.0 * gflops / sgemm_gflops, sgemm_gflops, threads, steps);
  out += line;
  return out;
}

std::string StepBench::to_json() const {
  nlohmann::json j = {{"step_ms", step_ms},
                      {"optimizer_ms", optimizer_ms},
                      {"gflops", gflops},
                      {"sgemm_gflops", sgemm_gflops},
                      {"threads", threads},
                      {"steps", steps},
                      {"tasks", nlohmann::json::array()}};
  for (const auto& t : tasks)
    j["tasks"].push_back({{"task", t.name},
                          {"batch", t.batch},
                          {"ms", t.ms},
                          {"samples_per_s", t.samples_per_s},
                          {"gflop", t.gflop},
                          {"gflops", t.gflops}});
  return j.dump(2);
}

}  // namespace gppf::train
