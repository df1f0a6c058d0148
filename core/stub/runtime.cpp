// Linked when the CUDA backend is not built: every entry point says so, available() is false.
#include <cstring>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"

namespace gppf::cuda {
namespace {
[[noreturn]] void no_cuda(const char* what) {
  GPPF_THROW(what,
             ": this gppf was built without CUDA; rebuild with -DGPPF_CUDA=ON on a machine with the CUDA toolkit");
}
}  // namespace

bool built_with_cuda() { return false; }
bool available() { return false; }
int device_count() { return 0; }
void set_device(int) { no_cuda("set_device"); }
std::string device_name(int) { no_cuda("device_name"); }
std::size_t device_memory_bytes(int) { no_cuda("device_memory_bytes"); }
void* malloc_device(std::size_t, int device) { no_cuda(str("allocation on cuda:", device).c_str()); }
void free_device(void*, int) {}
void empty_cache() {}
AllocatorStats allocator_stats(int) { return {}; }
void* malloc_pinned(std::size_t) { no_cuda("pinned host allocation"); }
void free_pinned(void*) {}
void memcpy_async(void* dst, const void* src, std::size_t bytes, CopyKind kind, const Stream&) {
  if (kind != CopyKind::HostToHost) no_cuda("device copy");
  std::memcpy(dst, src, bytes);
}
void memset_async(void*, int, std::size_t, const Stream&) { no_cuda("device memset"); }
Stream create_stream(int, bool) { no_cuda("create_stream"); }
void destroy_stream(const Stream&) {}
void synchronize(const Stream&) {}
void device_synchronize(int) {}
Stream copy_stream(int) { no_cuda("copy_stream"); }
Event create_event(int) { no_cuda("create_event"); }
void destroy_event(const Event&) {}
void record_event(const Event&, const Stream&) { no_cuda("record_event"); }
void stream_wait_event(const Stream&, const Event&) { no_cuda("stream_wait_event"); }
bool event_done(const Event&) { return true; }
void event_synchronize(const Event&) {}
void begin_capture(const Stream&) { no_cuda("graph capture"); }
void* end_capture(const Stream&, std::size_t*) { no_cuda("graph capture"); }
void abort_capture(const Stream&) {}
void launch_graph(void*, const Stream&) { no_cuda("graph launch"); }
void destroy_graph(void*) {}

}  // namespace gppf::cuda
