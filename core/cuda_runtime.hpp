#pragma once
// The CUDA runtime as the rest of the trainer sees it: no CUDA headers here. Implemented in
// core/cuda/runtime.cpp; a build without CUDA links core/stub/runtime.cpp, whose functions
// say that CUDA is not built in (cuda_available() is simply false there).
#include <cstddef>
#include <string>

#include "core/device.hpp"

namespace gppf::cuda {

bool built_with_cuda();
// True when built with CUDA and at least one device answers.
bool available();
int device_count();
void set_device(int index);
// "NVIDIA H100 80GB HBM3, sm_90, 79 GiB" for logs and benchmark tables.
std::string device_name(int index);
// The device's memory in bytes.
std::size_t device_memory_bytes(int index);

// Device memory through a caching allocator (freed blocks are kept per device and size class).
void* malloc_device(std::size_t bytes, int device);
void free_device(void* ptr, int device);
// Returns every cached block to the driver (device blocks and page-locked host blocks).
void empty_cache();
struct AllocatorStats {
  std::size_t allocated = 0;  // bytes handed out now
  std::size_t cached = 0;     // bytes held in free lists
  std::size_t peak = 0;
  std::size_t driver_allocs = 0;
};
AllocatorStats allocator_stats(int device);

// Page-locked host memory for asynchronous copies, through a cache of freed blocks by size class (no
// device wait once warm). A block freed while a copy from it may still be queued must be kept alive
// by its user until a sync.
void* malloc_pinned(std::size_t bytes);
void free_pinned(void* ptr);

enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice, HostToHost };
// Ordered on `stream`; host-to-host falls back to memcpy.
void memcpy_async(void* dst, const void* src, std::size_t bytes, CopyKind kind, const Stream& stream);
void memset_async(void* dst, int value, std::size_t bytes, const Stream& stream);

// Non-blocking (no implicit ordering with the legacy default stream), or blocking: ordered with the
// legacy stream as the legacy stream itself is, so that code queueing on either stays correct.
Stream create_stream(int device, bool blocking = false);
void destroy_stream(const Stream& stream);
void synchronize(const Stream& stream);
void device_synchronize(int device);
// The device's stream for host-to-device uploads of page-locked input batches (non-blocking: it does
// not wait for the legacy default stream, which the passes use), made on first use and kept.
Stream copy_stream(int device);

// A point in a stream's work (cudaEventDisableTiming) that another stream can wait for on the device.
struct Event {
  Device device;
  void* handle = nullptr;
};
Event create_event(int device);
void destroy_event(const Event& event);
void record_event(const Event& event, const Stream& stream);
// `stream`'s later work waits on the device for the work recorded before `event`: not a host sync.
void stream_wait_event(const Stream& stream, const Event& event);
// True when the work recorded before `event` is done; does not wait.
bool event_done(const Event& event);
// The host waits for the work recorded before `event`: a sync.
void event_synchronize(const Event& event);

// CUDA graphs (core/graph.hpp): this thread's capture of `stream`'s work (thread-local mode: other
// threads' CUDA calls go on), and the instantiated graph (a cudaGraphExec_t) it makes.
void begin_capture(const Stream& stream);
void* end_capture(const Stream& stream, std::size_t* nodes);
void abort_capture(const Stream& stream);
void launch_graph(void* exec, const Stream& stream);
void destroy_graph(void* exec);

}  // namespace gppf::cuda
