#include "core/graph.hpp"

#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "core/block_cache.hpp"
#include "core/counters.hpp"
#include "core/cuda_runtime.hpp"
#include "core/error.hpp"

namespace gppf::runtime {

namespace detail {
struct Recording {
  std::vector<std::function<void()>> work;
};
}  // namespace detail

namespace {
struct Capture {
  detail::Recording* host = nullptr;  // capturing on the host
  bool on = false;
  std::shared_ptr<CapturePool> pool;
};
thread_local Capture t_capture;
}  // namespace

detail::Recording* detail::host_recording() { return t_capture.host; }
void detail::record(Recording& r, std::function<void()> work) { r.work.push_back(std::move(work)); }

bool capturing() { return t_capture.on; }

std::shared_ptr<CapturePool> capture_pool(const Device& device) {
  return t_capture.on && t_capture.pool && t_capture.pool->device() == device ? t_capture.pool : nullptr;
}

struct CapturePool::Impl {
  explicit Impl(Device d)
      : cache(
            [d](std::size_t bytes) -> void* {
              if (d.is_cuda()) return cuda::malloc_device(bytes, d.index);
              return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
            },
            [d](void* p) {
              if (d.is_cuda())
                cuda::free_device(p, d.index);
              else
                std::free(p);
            }) {}
  std::mutex mutex;  // a tensor of the pool may be freed on another thread (a loader's, the checkpoint writer's)
  BlockCache cache;
};

CapturePool::CapturePool(Device device) : m_device(device), m(std::make_unique<Impl>(device)) {}
CapturePool::~CapturePool() = default;

void* CapturePool::allocate(std::size_t bytes) {
  std::lock_guard<std::mutex> lock(m->mutex);
  void* p = m->cache.allocate(bytes);
  GPPF_CHECK(p, "graph capture: allocation of ", bytes, " bytes on ", m_device.str(), " failed");
  return p;
}
void CapturePool::release(void* ptr) {
  std::lock_guard<std::mutex> lock(m->mutex);
  m->cache.release(ptr);
}
std::size_t CapturePool::reserved() const {
  std::lock_guard<std::mutex> lock(m->mutex);
  return m->cache.stats().allocated + m->cache.stats().cached;
}

struct Graph::Impl {
  Stream stream;
  bool capturing = false;
  bool ready = false;
  detail::Recording host;
  void* exec = nullptr;  // cudaGraphExec_t
  std::size_t nodes = 0;
  std::shared_ptr<CapturePool> pool;
};

Graph::Graph() : m(std::make_unique<Impl>()) {}
Graph::~Graph() {
  if (m->capturing) abort_capture();
  reset();
}

void Graph::begin_capture(const Stream& stream) {
  GPPF_CHECK(!t_capture.on, "graph capture: this thread is capturing already");
  reset();
  m->stream = stream;
  // A graph's pool is its own: a re-capture starts from an empty one.
  m->pool = std::make_shared<CapturePool>(stream.device);
  if (stream.device.is_cuda()) {
    GPPF_CHECK(stream.handle, "graph capture on ", stream.device.str(),
               ": the legacy default stream cannot be captured; run the step on a stream of its own");
    cuda::begin_capture(stream);
    t_capture.host = nullptr;
  } else {
    t_capture.host = &m->host;
  }
  t_capture.on = true;
  t_capture.pool = m->pool;
  m->capturing = true;
}

void Graph::end_capture() {
  GPPF_CHECK(m->capturing, "graph: end_capture without begin_capture");
  t_capture = Capture();
  m->capturing = false;
  if (m->stream.device.is_cuda())
    m->exec = cuda::end_capture(m->stream, &m->nodes);
  else
    m->nodes = m->host.work.size();
  m->ready = true;
}

void Graph::abort_capture() {
  if (!m->capturing) return;
  t_capture = Capture();
  m->capturing = false;
  if (m->stream.device.is_cuda()) cuda::abort_capture(m->stream);
  reset();
}

void Graph::launch() {
  GPPF_CHECK(m->ready, "graph: launch before a capture ended");
  GPPF_CHECK(!t_capture.on, "graph: launch while this thread captures");
  count_launch();
  if (m->stream.device.is_cuda()) {
    cuda::launch_graph(m->exec, m->stream);
    return;
  }
  for (const auto& w : m->host.work) w();
}

void Graph::reset() {
  if (m->exec) cuda::destroy_graph(m->exec);
  m->exec = nullptr;
  m->host.work.clear();
  m->host.work.shrink_to_fit();
  m->nodes = 0;
  m->ready = false;
  m->pool.reset();
}

bool Graph::ready() const { return m->ready; }
Device Graph::device() const { return m->stream.device; }
std::size_t Graph::nodes() const { return m->nodes; }
std::size_t Graph::pool_bytes() const { return m->pool ? m->pool->reserved() : 0; }

}  // namespace gppf::runtime
