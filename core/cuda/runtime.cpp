#include <map>
#include <mutex>
#include <vector>

#include "core/counters.hpp"
#include "core/cuda/check.hpp"
#include "core/cuda_runtime.hpp"

namespace gppf::cuda {
namespace {

// Size classes: 512 B granularity below 1 MiB, 2 MiB above, so that the per-step allocation
// pattern of a training loop is served from the cache after the first step.
std::size_t size_class(std::size_t bytes) {
  constexpr std::size_t kSmall = 512, kLarge = 2u << 20, kSplit = 1u << 20;
  return bytes < kSplit ? (bytes + kSmall - 1) / kSmall * kSmall : (bytes + kLarge - 1) / kLarge * kLarge;
}

struct DeviceCache {
  std::multimap<std::size_t, void*> free_blocks;
  std::map<void*, std::size_t> live;
  AllocatorStats stats;
};

std::mutex g_mutex;
std::map<int, DeviceCache> g_caches;
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

void* malloc_device(std::size_t bytes, int device) {
  static const int visible = device_count();
  GPPF_CHECK(device >= 0 && device < visible, "allocation on cuda:", device, ": ", visible,
             " CUDA device(s) visible; check CUDA_VISIBLE_DEVICES and the driver");
  const std::size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceCache& cache = g_caches[device];
  void* ptr = nullptr;
  auto it = cache.free_blocks.find(cls);
  if (it != cache.free_blocks.end()) {
    ptr = it->second;
    cache.free_blocks.erase(it);
    cache.stats.cached -= cls;
  } else {
    DeviceGuard guard(device);
    cudaError_t err = cudaMalloc(&ptr, cls);
    if (err == cudaErrorMemoryAllocation) {  // give the cache back and try once more
      cudaGetLastError();
      for (auto& [size, block] : cache.free_blocks) cudaFree(block);
      cache.free_blocks.clear();
      cache.stats.cached = 0;
      err = cudaMalloc(&ptr, cls);
    }
    GPPF_CHECK(err == cudaSuccess, "cudaMalloc of ", cls, " bytes on cuda:", device,
               " failed: ", cudaGetErrorString(err), " (", cache.stats.allocated,
               " bytes in use); reduce the batch size");
    ++cache.stats.driver_allocs;
  }
  cache.live[ptr] = cls;
  cache.stats.allocated += cls;
  cache.stats.peak = std::max(cache.stats.peak, cache.stats.allocated);
  return ptr;
}

void free_device(void* ptr, int device) {
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceCache& cache = g_caches[device];
  auto it = cache.live.find(ptr);
  if (it == cache.live.end()) return;
  cache.free_blocks.emplace(it->second, ptr);
  cache.stats.allocated -= it->second;
  cache.stats.cached += it->second;
  cache.live.erase(it);
}

void empty_cache() {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& [size, block] : g_pinned_free) {
    runtime::count_sync();  // cudaFreeHost waits for the device
    cudaFreeHost(block);
  }
  g_pinned_free.clear();
  for (auto& [device, cache] : g_caches) {
    DeviceGuard guard(device);
    for (auto& [size, block] : cache.free_blocks) cudaFree(block);
    cache.free_blocks.clear();
    cache.stats.cached = 0;
  }
}

AllocatorStats allocator_stats(int device) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_caches[device].stats;
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

Stream create_stream(int device) {
  DeviceGuard guard(device);
  cudaStream_t s = nullptr;
  GPPF_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
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

}  // namespace gppf::cuda
