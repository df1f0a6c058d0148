#pragma once
// Gradient synchronisation of a distributed step (docs/SCALING.md). Parameters come in groups, each
// summed over the communicator of the ranks that hold it: replicated parameters (stem, shortcuts,
// shared legos, routers) over every rank, a task's head over the replicas of its task group, a lego over
// the ranks holding the same shard.
//
// Which parameters some rank touches in a step is known before it starts (the active tasks and their
// routing are the same on every rank), so every rank knows what to send without asking: a parameter no
// rank touches is left out (no bytes, no update, as in a single process), one touched on some ranks
// only is summed with zeros from the others, and nothing waits for a gradient nobody produces.
//
// Parameters are split into segments in backward order (heads, the last lego layer, ..., the first,
// the stem). A segment is packed into buckets and its non-blocking all-reduces start as soon as the
// segment's gradients are final (ready()), so they run while the backward pass goes on; finish()
// starts what is left, in segment order, and waits for everything.
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "src/dist/communicator.hpp"
#include "src/nn/parameter.hpp"

namespace gppf::dist {

struct SyncGroup {
  std::string name;
  Communicator* comm = nullptr;
  std::vector<nn::Parameter*> params;
  std::vector<int> segments;  // per parameter
};

class GradSync {
 public:
  GradSync(std::vector<SyncGroup> groups, int num_segments, double bucket_mb);
  // Starts a step: `touched[g][i]` says whether some rank touches parameter i of group g in it.
  void begin(std::vector<std::vector<char>> touched);
  // The gradients of `segment` are final on this rank: start its all-reduces (and those of every
  // earlier segment not started yet, so that all ranks start them in the same order).
  void ready(int segment);
  // Starts the rest and waits for all; gradients of touched parameters are then the sums.
  void finish();
  // Bytes of gradient payload this rank put into all-reduces in the last step.
  std::int64_t last_bytes() const { return m_last_bytes; }

 private:
  struct Bucket {
    std::size_t group = 0;
    std::vector<nn::Parameter*> params;
    Tensor data;  // on the communicator's device
  };
  std::vector<SyncGroup> m_groups;
  int m_segments;
  std::int64_t m_bucket_floats;
  std::vector<std::vector<char>> m_touched;
  int m_started = 0;  // segments [0, m_started) are in flight
  std::vector<Bucket> m_buckets;
  std::int64_t m_last_bytes = 0;
};

}  // namespace gppf::dist
