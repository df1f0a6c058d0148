#include "src/train/bench_step.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "core/counters.hpp"
#include "core/cuda_runtime.hpp"
#include "src/optim/optimizer.hpp"
#include "src/train/executor_local.hpp"
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

SyntheticData parse_synthetic(const std::string& text, const std::string& option) {
  SyntheticData d;
  int used = 0, used_classes = 0;
  const int n =
      std::sscanf(text.c_str(), "%dx%dx%d%n:%d%n", &d.height, &d.width, &d.channels, &used, &d.classes, &used_classes);
  const bool whole =
      (n == 3 && used == static_cast<int>(text.size())) || (n == 4 && used_classes == static_cast<int>(text.size()));
  GPPF_CHECK(whole && d.height > 0 && d.width > 0 && (d.channels == 1 || d.channels == 3) && d.classes >= 1, option,
             " '", text, "' is not HxWxC[:CLASSES] with C 1 or 3 (e.g. 224x224x3:1000)");
  return d;
}

std::vector<TaskSpec> synthetic_specs(const TrainConfig& config, const SyntheticData& d) {
  std::vector<TaskSpec> specs;
  for (const TaskConfig& t : config.tasks) {
    io::Manifest m;
    m.task = t.type == io::TaskType::Classification ? t.type : io::TaskType::Detection;
    for (int c = 0; c < d.classes; ++c) m.classes.push_back(str("class", c));
    m.height = d.height;
    m.width = d.width;
    m.channels = d.channels;
    m.has_boxes = m.has_masks = t.type != io::TaskType::Classification;
    specs.push_back(resolve_task(t, m));
  }
  return specs;
}

namespace {

// `pinned`: page-locked, as the loader's batches for a GPU (they go up on the copy stream).
io::Batch synthetic_batch(const TaskSpec& s, std::uint64_t seed, bool pinned) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> pixel(0.0f, 1.0f);
  std::uniform_int_distribution<int> cls(0, static_cast<int>(s.manifest.classes.size()) - 1);
  const std::int64_t n = s.config.batch_size;
  io::Batch b;
  b.images = Tensor::empty({n, s.height, s.width, s.channels}, DType::F32, Device::host(), pinned);
  std::generate_n(b.images.data_as<float>(), b.images.numel(), [&] { return pixel(rng); });
  b.labels = Tensor::empty({n}, DType::I32, Device::host(), pinned);
  b.masks = Tensor::empty({n, s.height, s.width}, DType::I32, Device::host(), pinned);
  std::fill_n(b.masks.data_as<std::int32_t>(), b.masks.numel(), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    const int c = cls(rng);
    b.labels.data_as<std::int32_t>()[i] = c;
    b.ids.push_back(i);
    // One box over the middle of the image, its pixels the class in the mask.
    const int y1 = s.height / 4, x1 = s.width / 4, y2 = 3 * s.height / 4, x2 = 3 * s.width / 4;
    b.boxes.push_back(
        {io::Box{static_cast<float>(x1), static_cast<float>(y1), static_cast<float>(x2), static_cast<float>(y2), c}});
    std::int32_t* mask = b.masks.data_as<std::int32_t>() + i * s.height * s.width;
    for (int y = y1; y < y2; ++y)
      for (int x = x1; x < x2; ++x) mask[y * s.width + x] = c + 1;
  }
  return b;
}

// Batches are read before timing and the loaders stopped: on a 2-core host their worker threads
// would otherwise compete with the step's OpenMP threads, and every parallel region waits for its
// slowest thread. This measures the step; the loader has its own benchmark (bench_loader).
constexpr int kBatches = 4;

// `upload`: the path the batches took to the device, as a training step's would.
std::vector<std::vector<io::Batch>> preload_batches(const TrainConfig& config, const TaskData& data, Network& net,
                                                    const SyntheticData* synthetic, std::string& upload) {
  const std::vector<TaskSpec>& specs = data.specs;
  const bool gpu = net.device().is_cuda();
  std::vector<std::vector<io::Batch>> batches(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    std::unique_ptr<io::Loader> loader;
    if (!synthetic)
      loader = std::make_unique<io::Loader>(data.datasets[i], train_loader_config(config, specs[i], i, net.device()));
    for (int b = 0; b < kBatches; ++b)
      batches[i].push_back(synthetic
                               ? synthetic_batch(specs[i], config.seed + 97 * i + static_cast<std::uint64_t>(b), gpu)
                               : loader->next());
  }
  // On a GPU the batches wait there: the step is timed, not the host-to-device copy of its input.
  bool copy_stream = false, compute_stream = false;
  for (std::size_t i = 0; i < batches.size(); ++i)
    for (auto& b : batches[i]) {
      StagedBatch s = net.stage(static_cast<int>(i), b);
      copy_stream = copy_stream || s.on_copy_stream();
      compute_stream = compute_stream || (gpu && s.batch.images.device().is_host());
      b = net.take(s);
    }
  upload = !gpu                            ? "none (host)"
           : copy_stream && compute_stream ? "copy and compute streams"
           : copy_stream                   ? "copy stream"
                                           : "compute stream";
  if (gpu) cuda::synchronize(net.stream());
  return batches;
}

// Medians of the timed steps (on a shared machine a neighbour's burst moves a mean by 20 %).
void summarize(StepBench& r, Network& net, const std::vector<std::vector<double>>& task_ms,
               const std::vector<double>& step_ms, const std::vector<double>& opt_ms) {
  double total_gflop = 0;
  for (std::size_t i = 0; i < net.tasks().size(); ++i) {
    const TaskSpec& spec = net.tasks()[i];
    TaskBench t;
    t.name = spec.config.name;
    t.batch = spec.config.batch_size;
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
}

}  // namespace

// The trainer's own step (simt_step on a LocalExecutor), every task in every step, at the config's lr.
StepBench bench_step(const TrainConfig& config, int warmup_steps, int steps, const SyntheticData* synthetic) {
  GPPF_CHECK(steps >= 1 && warmup_steps >= 0, "bench step: --steps must be >= 1 and --warmup >= 0");
  if (config.threads > 0) omp_set_num_threads(config.threads);
  const TaskData data = synthetic ? TaskData{{}, synthetic_specs(config, *synthetic)} : open_tasks(config);
  Network net(config, data.specs);
  LocalExecutor executor(net);
  auto optimizer = optim::Optimizer::create(config.optimizer, executor.held_parameters());

  // The host's yardstick; a GPU run names its device instead.
  const bool host = net.device().is_host();
  const double sgemm_before = host ? sgemm_gflops() : 0.0;
  StepBench r;
  r.device = host ? std::string("host") : cuda::device_name(net.device().index);
  r.steps = steps;
  r.threads = omp_get_max_threads();
  const std::vector<std::vector<io::Batch>> batches = preload_batches(config, data, net, synthetic, r.upload);
  std::vector<std::vector<double>> task_ms(data.specs.size());
  std::vector<double> step_ms, opt_ms;
  std::vector<int> all(data.specs.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  for (int s = 0; s < warmup_steps + steps; ++s) {
    const bool timed = s >= warmup_steps;
    const auto t_step = Clock::now();
    const runtime::Counters c0 = runtime::counters();
    // Tasks batched into one pass share its time in proportion to their batches.
    auto run_group = [&](const std::vector<int>& tasks) {
      std::vector<io::Batch> step_batches;
      double samples = 0;
      for (int t : tasks) {
        step_batches.push_back(batches[static_cast<std::size_t>(t)][static_cast<std::size_t>(s % kBatches)]);
        samples += static_cast<double>(step_batches.back().size());
      }
      const auto t0 = Clock::now();
      std::vector<PendingLoss> losses = net.train_tasks(tasks, step_batches, s);
      const double ms = ms_since(t0);
      for (std::size_t k = 0; k < tasks.size() && timed; ++k)
        task_ms[static_cast<std::size_t>(tasks[k])].push_back(ms * static_cast<double>(step_batches[k].size()) /
                                                              samples);
      return losses;
    };
    auto run_passes = [&](const std::vector<int>& tasks) {
      // A step graph holds one step's passes: all tasks in one call.
      if (net.batches_tasks() || config.cuda_graphs == "on") return run_group(tasks);
      std::vector<PendingLoss> out;
      for (int t : tasks) out.push_back(std::move(run_group({t}).at(0)));
      return out;
    };
    Clock::time_point t_update;
    simt_step(executor, net, *optimizer, s, config.optimizer.lr, all, run_passes, [&] { t_update = Clock::now(); });
    const runtime::Counters used = runtime::counters() - c0;
    if (net.device().is_cuda()) cuda::synchronize(net.stream());  // the update's kernels are part of the step
    if (timed) {
      opt_ms.push_back(ms_since(t_update));
      step_ms.push_back(ms_since(t_step));
      // Every timed step makes the same calls; the largest is reported.
      r.syncs_per_step = std::max(r.syncs_per_step, used.syncs);
      r.launches_per_step = std::max(r.launches_per_step, used.launches);
    }
  }
  summarize(r, net, task_ms, step_ms, opt_ms);
  const Network::GraphStats gs = net.graph_stats();
  if (gs.launches > 0)
    r.graph = str(gs.captures, " captures, ", gs.launches, " launches, ", gs.nodes, " calls or nodes, pool ",
                  gs.pool_bytes >> 20, " MiB");
  if (!host) r.peak_bytes = static_cast<std::int64_t>(cuda::allocator_stats(net.device().index).peak);
  // The machine's rate is the best seen, before and after the steps (a slow sample is the neighbours).
  r.sgemm_gflops = host ? std::max(sgemm_before, sgemm_gflops()) : 0.0;
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
  if (sgemm_gflops > 0)
    std::snprintf(line, sizeof line,
                  "SIMT step %.2f ms (optimizer %.2f ms): %.1f GFLOP/s = %.0f %% of SGEMM (%.1f GFLOP/s), %d "
                  "threads, %d steps\n",
                  step_ms, optimizer_ms, gflops, 100.0 * gflops / sgemm_gflops, sgemm_gflops, threads, steps);
  else
    std::snprintf(
        line, sizeof line,
        "SIMT step %.2f ms (optimizer %.2f ms): %.1f GFLOP/s on %s, %d steps (per-task ms: the host's time to "
        "queue the pass; the step has no sync inside)\n",
        step_ms, optimizer_ms, gflops, device.c_str(), steps);
  out += line;
  const std::string peak = peak_bytes > 0 ? str(", peak device memory ", peak_bytes >> 20, " MiB") : std::string();
  std::snprintf(line, sizeof line, "per step: %lld host syncs, %lld launches (kernels, copies, memsets)%s\n",
                static_cast<long long>(syncs_per_step), static_cast<long long>(launches_per_step), peak.c_str());
  out += line;
  out += "input upload: " + upload + "\n";
  if (!graph.empty()) out += "step graph (cuda_graphs: on): " + graph + "\n";
  return out;
}

std::string StepBench::to_json() const {
  nlohmann::json j = {{"device", device},
                      {"step_ms", step_ms},
                      {"optimizer_ms", optimizer_ms},
                      {"gflops", gflops},
                      {"sgemm_gflops", sgemm_gflops},
                      {"threads", threads},
                      {"steps", steps},
                      {"syncs_per_step", syncs_per_step},
                      {"launches_per_step", launches_per_step},
                      {"peak_bytes", peak_bytes},
                      {"upload", upload},
                      {"graph", graph},
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
