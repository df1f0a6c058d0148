#include "kernels/common.hpp"

#include <atomic>

namespace gppf::kernels {
namespace {
std::atomic<bool> g_allow_tf32{false};
}

void set_allow_tf32(bool allow) { g_allow_tf32.store(allow); }
bool allow_tf32() { return g_allow_tf32.load(); }

}  // namespace gppf::kernels
