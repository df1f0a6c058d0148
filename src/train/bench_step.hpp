#pragma once
// `gppf bench step`: times SIMT training steps of a config on its real data and reports samples/s
// and achieved GFLOP/s per task, next to the machine's SGEMM rate measured in the same run.
#include <cstdint>
#include <string>
#include <vector>

#include "src/train/config.hpp"

namespace gppf::train {

struct TaskSpec;

struct TaskBench {
  std::string name;
  int batch = 0;
  double ms = 0;             // median time of the task's forward+loss+backward per step
  double samples_per_s = 0;  // batch / ms
  double gflop = 0;          // per step: 6 x forward multiply-adds x batch (backward = 2 x forward)
  double gflops = 0;
};

struct StepBench {
  std::vector<TaskBench> tasks;
  double step_ms = 0;       // median wall time of a whole SIMT step (all tasks + optimizer), batches preloaded
  double optimizer_ms = 0;  // median time of the optimizer step
  double gflops = 0;        // all tasks' FLOPs / step time
  double sgemm_gflops = 0;  // OpenBLAS SGEMM 1024^3 on the same threads, best before/after (0 on a GPU)
  int steps = 0, threads = 0;
  // Host waits and work enqueued per step (core/counters.hpp: counted on every device, so the host
  // shows what a GPU step would make), and the caching allocator's peak on a GPU (0 on the host).
  std::int64_t syncs_per_step = 0, launches_per_step = 0, peak_bytes = 0;
  std::string device;  // "host" or the GPU's name
  // How the input batches go up (Network::stage): "copy stream" (page-locked, ordered by an event),
  // "compute stream" (pageable), both, or "none (host)".
  std::string upload;
  // cuda_graphs: on: the step graph's captures, launches, size and pool; empty when off.
  std::string graph;
  std::string to_table() const;
  std::string to_json() const;
};

// `--synthetic HxWxC[:CLASSES]`: every task of the config on random images of that shape (CLASSES
// classes, default 1000; detection and segmentation get one centred box), no data set opened.
struct SyntheticData {
  int height = 0, width = 0, channels = 3, classes = 1000;
};
// `option` names the argument in errors ("bench step: --synthetic").
SyntheticData parse_synthetic(const std::string& text, const std::string& option = "bench step: --synthetic");
// Tasks of the config's types on data of one shape: a step's cost, or the network's table, without
// a data set (ImageNet-sized benchmarks on a machine that holds none).
std::vector<TaskSpec> synthetic_specs(const TrainConfig& config, const SyntheticData& d);

StepBench bench_step(const TrainConfig& config, int warmup_steps, int steps, const SyntheticData* synthetic = nullptr);

}  // namespace gppf::train
