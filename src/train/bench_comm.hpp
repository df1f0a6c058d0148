#pragma once
// `gppf bench comm` (docs/SCALING.md): bytes per training step of the config's network for a range of
// layouts next to a naive design that all-reduces every parameter on every rank; the MPI all-to-all
// and all-reduce bandwidth of this host (when run under mpirun with 2+ ranks); and the weak- and
// strong-scaling efficiency of gppf-r50 at 8, 64 and 512 GPUs predicted by an alpha-beta model of
// NVLink and InfiniBand links from a measured step compute time.
#include <string>

#include "src/train/config.hpp"

namespace gppf::train {

struct CommBenchOptions {
  double step_ms = 64.5;  // GPU compute time of one step at `images_per_gpu` (see docs/SCALING.md)
  int images_per_gpu = 256;
  double nvlink_gbs = 450, nvlink_us = 2;  // per GPU, one direction
  double ib_gbs = 50, ib_us = 5;           // per GPU (one 400 Gb/s NDR port each)
  int gpus_per_node = 8;
  bool json = false;
};

// Returns the report (a table, or JSON). Collective when MPI runs with several ranks; the report is
// meant for rank 0.
std::string bench_comm(const TrainConfig& config, const CommBenchOptions& options);

}  // namespace gppf::train
