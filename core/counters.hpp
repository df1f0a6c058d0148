#pragma once
// What a step costs the host's side of a device, counted on every backend so that host tests and
// `gppf bench step` see the waits and launches a GPU step makes (docs/PERFORMANCE.md, "Syncs and
// launches"):
//  - a sync: the host waits for a device stream (read_back of values, a stream synchronise);
//  - a launch: work enqueued on a stream: a kernels/ entry point (one CUDA kernel or library call;
//    a few for batch-norm training, the losses and the multi-tensor optimizer), a copy or a memset.
// Counts are per thread: the loaders' and the checkpoint writer's threads keep their own.
#include <cstdint>

namespace gppf::runtime {

struct Counters {
  std::int64_t syncs = 0;
  std::int64_t launches = 0;
  Counters operator-(const Counters& o) const { return {syncs - o.syncs, launches - o.launches}; }
};

// This thread's counts since it started.
Counters counters();
void count_sync();
void count_launch();
void count_launches(std::int64_t n);

}  // namespace gppf::runtime
