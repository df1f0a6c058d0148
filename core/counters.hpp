#pragma once
// What a step costs the host's side of a device, counted on every backend so that host tests and
// `gppf bench step` see the waits and launches a GPU step makes (docs/PERFORMANCE.md, "Syncs and
// launches"):
//  - a sync: the host waits for a device stream (read_back of values, a stream or event synchronise);
//  - a launch: work enqueued on a stream: a kernels/ entry point (one CUDA kernel or library call;
//    a few for batch-norm training, the losses and the multi-tensor optimizer), a copy or a memset;
//  - an event wait: a stream waits on the device for another's event (no host wait).
// Counts are per thread: the loaders' and the checkpoint writer's threads keep their own.
#include <cstdint>

namespace gppf::runtime {

struct Counters {
  std::int64_t syncs = 0;
  std::int64_t launches = 0;
  // A stream made to wait for an event of another (input uploads on the copy stream): ordered on the
  // device, the host goes on; not a sync.
  std::int64_t event_waits = 0;
  Counters operator-(const Counters& o) const {
    return {syncs - o.syncs, launches - o.launches, event_waits - o.event_waits};
  }
};

// This thread's counts since it started.
Counters counters();
void count_sync();
void count_launch();
void count_launches(std::int64_t n);
void count_event_wait();

}  // namespace gppf::runtime
