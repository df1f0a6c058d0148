#pragma once
// `gppf bench step`: times SIMT training steps of a config on its real data and reports samples/s
// and achieved GFLOP/s per task, next to the machine's SGEMM rate measured in the same run.
#include <string>
#include <vector>

#include "src/train/config.hpp"

namespace gppf::train {

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
  double sgemm_gflops = 0;  // OpenBLAS SGEMM 1024^3 on the same threads, best before/after the steps
  int steps = 0, threads = 0;
  std::string to_table() const;
  std::string to_json() const;
};

StepBench bench_step(const TrainConfig& config, int warmup_steps, int steps);

}  // namespace gppf::train
