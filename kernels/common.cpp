#include "kernels/common.hpp"

#include <atomic>

#include "core/counters.hpp"

namespace gppf::kernels {
namespace {
std::atomic<bool> g_allow_tf32{false};
}

void set_allow_tf32(bool allow) { g_allow_tf32.store(allow); }
bool allow_tf32() { return g_allow_tf32.load(); }

bool launch_on_cuda(const Device& device) {
  runtime::count_launch();
  return device.is_cuda();
}

}  // namespace gppf::kernels
