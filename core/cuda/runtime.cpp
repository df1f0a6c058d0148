#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "core/block_cache.hpp"
#include "core/counters.hpp"
#include "core/cuda/check.hpp"
#include "core/cuda_runtime.hpp"

namespace gppf::cuda {
namespace {

// Size classes of page-locked blocks: 512 B granularity below 1 MiB, 2 MiB above, so that the loader's
// batches are served from the cache after the first ones.
std::size_t size_class(std::size_t bytes) {
  constexpr std::size_t kSmall = 512, kLarge = 2u << 20, kSplit = 1u << 20;
  return bytes < kSplit ? (bytes + kSmall - 1) / kSmall * kSmall : (bytes + kLarge - 1) / kLarge * kLarge;
}

std::mutex g_mutex;
// Never destroyed: freeing device memory while the CUDA runtime unloads at exit fails, and the driver
// takes it back with the process anyway.
auto& g_caches = *new std::map<int, std::unique_ptr<BlockCache>>;
// Freed page-locked blocks by size class: cudaMallocHost and cudaFreeHost each wait for the device, and
// the loader made a pair per batch. A block is handed out again at once; whoever enqueued an
// asynchronous copy from it keeps it alive until a sync (Network keeps a step's batches until
// end_step).
std::multimap<std::size_t, void*> g_pinned_free;
std::map<void*, std::size_t> g_pinned_live;

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    GPPF_CUDA_CHECK(cudaGetDevice(&m_previous));
    if (m_previous != device) GPPF_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(m_previous); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int m_previous = 0;
};

cudaMemcpyKind native_kind(CopyKind kind) {
  switch (kind) {
    case CopyKind::HostToDevice: return cudaMemcpyHostToDevice;
    case CopyKind::DeviceToHost: return cudaMemcpyDeviceToHost;
    case CopyKind::DeviceToDevice: return cudaMemcpyDeviceToDevice;
    case CopyKind::HostToHost: return cudaMemcpyHostToHost;
  }
  return cudaMemcpyDefault;
}

}  // namespace

bool built_with_cuda() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

bool available() { return device_count() > 0; }

void set_device(int index) { GPPF_CUDA_CHECK(cudaSetDevice(index)); }

std::string device_name(int index) {
  cudaDeviceProp prop{};
  GPPF_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return str(prop.name, ", sm_", prop.major, prop.minor, ", ", prop.totalGlobalMem >> 30, " GiB");
}

std::size_t device_memory_bytes(int index) {
  cudaDeviceProp prop{};
  GPPF_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return prop.totalGlobalMem;
}

namespace {
// The device's caching allocator (core/block_cache.hpp: best fit, split, merge), made on first use.
BlockCache& device_cache(int device) {
  auto it = g_caches.find(device);
  if (it == g_caches.end()) {
    auto raw_alloc = [device](std::size_t bytes) -> void* {
      DeviceGuard guard(device);
      void* ptr = nullptr;
      const cudaError_t err = cudaMalloc(&ptr, bytes);
      if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();  // not sticky: the cache gives its free segments back and tries again
        return nullptr;
      }
      GPPF_CUDA_CHECK(err);
      return ptr;
    };
    auto raw_free = [device](void* ptr) {
      runtime::count_sync();  // cudaFree waits for the device
      DeviceGuard guard(device);
      cudaFree(ptr);
    };
    it = g_caches.emplace(device, std::make_unique<BlockCache>(raw_alloc, raw_free)).first;
  }
  return *it->second;
}
}  // namespace

void* malloc_device(std::size_t bytes, int device) {
  static const int visible = device_count();
  GPPF_CHECK(device >= 0 && device < visible, "allocation on cuda:", device, ": ", visible,
             " CUDA device(s) visible; check CUDA_VISIBLE_DEVICES and the driver");
  std::lock_guard<std::mutex> lock(g_mutex);
  BlockCache& cache = device_cache(device);
  void* ptr = cache.allocate(bytes);
  GPPF_CHECK(ptr, "cudaMalloc of ", bytes, " bytes on cuda:", device, " failed: out of memory (",
             cache.stats().allocated, " bytes in use, peak ", cache.stats().peak, "); reduce the batch size");
  return ptr;
}

void free_device(void* ptr, int device) {
  std::lock_guard<std::mutex> lock(g_mutex);
  device_cache(device).release(ptr);
}

void empty_cache() {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& [size, block] : g_pinned_free) {
    runtime::count_sync();  // cudaFreeHost waits for the device
    cudaFreeHost(block);
  }
  g_pinned_free.clear();
  for (auto& [device, cache] : g_caches) cache->empty();
}

AllocatorStats allocator_stats(int device) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const BlockCacheStats& s = device_cache(device).stats();
  return {s.allocated, s.cached, s.peak, s.driver_allocs};
}

void* malloc_pinned(std::size_t bytes) {
  const std::size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(g_mutex);
  void* ptr = nullptr;
  auto it = g_pinned_free.find(cls);
  if (it != g_pinned_free.end()) {
    ptr = it->second;
    g_pinned_free.erase(it);
  } else {
    runtime::count_sync();  // cudaMallocHost waits for the device
    GPPF_CUDA_CHECK(cudaMallocHost(&ptr, cls));
  }
  g_pinned_live[ptr] = cls;
  return ptr;
}

void free_pinned(void* ptr) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_pinned_live.find(ptr);
  if (it == g_pinned_live.end()) return;
  g_pinned_free.emplace(it->second, ptr);
  g_pinned_live.erase(it);
}

void memcpy_async(void* dst, const void* src, std::size_t bytes, CopyKind kind, const Stream& stream) {
  GPPF_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, native_kind(kind), native(stream)));
}

void memset_async(void* dst, int value, std::size_t bytes, const Stream& stream) {
  GPPF_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, native(stream)));
}

Stream create_stream(int device, bool blocking) {
  DeviceGuard guard(device);
  cudaStream_t s = nullptr;
  GPPF_CUDA_CHECK(cudaStreamCreateWithFlags(&s, blocking ? cudaStreamDefault : cudaStreamNonBlocking));
  return Stream{Device::cuda(device), s};
}

void destroy_stream(const Stream& stream) {
  if (stream.handle) cudaStreamDestroy(native(stream));
}

void synchronize(const Stream& stream) {
  runtime::count_sync();
  if (stream.device.is_host() && !stream.handle) {
    GPPF_CUDA_CHECK(cudaDeviceSynchronize());
    return;
  }
  GPPF_CUDA_CHECK(cudaStreamSynchronize(native(stream)));
}

void device_synchronize(int device) {
  runtime::count_sync();
  DeviceGuard guard(device);
  GPPF_CUDA_CHECK(cudaDeviceSynchronize());
}

Stream copy_stream(int device) {
  // Never destroyed, as the caches: destroying streams while the runtime unloads at exit fails.
  static auto& streams = *new std::map<int, Stream>;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = streams.find(device);
  if (it == streams.end()) it = streams.emplace(device, create_stream(device)).first;
  return it->second;
}

void begin_capture(const Stream& stream) {
  GPPF_CUDA_CHECK(cudaStreamBeginCapture(native(stream), cudaStreamCaptureModeThreadLocal));
}

void* end_capture(const Stream& stream, std::size_t* nodes) {
  cudaGraph_t graph = nullptr;
  GPPF_CUDA_CHECK(cudaStreamEndCapture(native(stream), &graph));
  std::size_t n = 0;
  const cudaError_t counted = cudaGraphGetNodes(graph, nullptr, &n);
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  GPPF_CUDA_CHECK(counted);
  GPPF_CUDA_CHECK(made);
  if (nodes) *nodes = n;
  return exec;
}

void abort_capture(const Stream& stream) {
  cudaGraph_t graph = nullptr;
  // Ends the broken capture (its error is the one already thrown); the partial graph is dropped.
  if (cudaStreamEndCapture(native(stream), &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
  cudaGetLastError();
}

void launch_graph(void* exec, const Stream& stream) {
  GPPF_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), native(stream)));
}

void destroy_graph(void* exec) {
  if (exec) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec));
}

Event create_event(int device) {
  DeviceGuard guard(device);
  cudaEvent_t e = nullptr;
  GPPF_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return Event{Device::cuda(device), e};
}

void destroy_event(const Event& event) {
  // Work still queued before it is fine: the driver releases the event once that is done.
  if (event.handle) cudaEventDestroy(static_cast<cudaEvent_t>(event.handle));
}

void record_event(const Event& event, const Stream& stream) {
  GPPF_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event.handle), native(stream)));
}

void stream_wait_event(const Stream& stream, const Event& event) {
  runtime::count_event_wait();
  GPPF_CUDA_CHECK(cudaStreamWaitEvent(native(stream), static_cast<cudaEvent_t>(event.handle), 0));
}

bool event_done(const Event& event) {
  const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event.handle));
  if (err == cudaErrorNotReady) {
    cudaGetLastError();  // not sticky, but clear it so that the next check does not see it
    return false;
  }
  GPPF_CUDA_CHECK(err);
  return true;
}

void event_synchronize(const Event& event) {
  runtime::count_sync();
  GPPF_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event.handle)));
}

}  // namespace gppf::cuda
