#include "core/counters.hpp"

#include "core/error.hpp"
#include "core/graph.hpp"

namespace gppf::runtime {
namespace {
thread_local Counters t_counters;
}  // namespace

Counters counters() { return t_counters; }
void count_sync() {
  GPPF_CHECK(!capturing(),
             "a host sync (a value read back, a stream or event wait) inside a captured graph: the "
             "captured work must not wait for the device");
  ++t_counters.syncs;
}
void count_launch() { ++t_counters.launches; }
void count_launches(std::int64_t n) { t_counters.launches += n; }
void count_event_wait() { ++t_counters.event_waits; }

}  // namespace gppf::runtime
