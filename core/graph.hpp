#pragma once
// A step's work captured once and launched again (CUDA graphs; docs/PERFORMANCE.md, "CUDA graphs").
// The same object on every device, so that the host tests check what a replay does:
//  - on CUDA, the work a thread queues on the capturing stream becomes a cudaGraph;
//  - on the host, every kernel entry point hands its work to host_launch, which records it (with the
//    tensors, functors and scalars it was given, by value) instead of running it.
// Either way a launch reruns the recorded work with the addresses and parameters of the capture:
// values that change from step to step must be read from memory (a table uploaded before the launch),
// never passed as arguments, and the inputs must be copied into the captured input tensors.
//
// While capturing, tensors are allocated from the graph's own pool (core/block_cache.hpp), which the
// graph keeps: a block the captured work freed and reused stays the graph's, and no allocation outside
// the graph is handed an address the graph writes. A sync while capturing throws (a CUDA graph cannot
// hold one), on every device.
#include <cstddef>
#include <functional>
#include <memory>
#include <utility>

#include "core/device.hpp"

namespace gppf::runtime {

namespace detail {
struct Recording;
// This thread's host recording, or null when it is not capturing on the host.
Recording* host_recording();
void record(Recording& r, std::function<void()> work);
}  // namespace detail

// Host work of a kernel entry point: runs now, or is recorded while this thread captures a host graph.
// `work` must hold everything it reads by value (tensors keep their storage, spans do not).
template <class F>
void host_launch(F&& work) {
  if (detail::Recording* r = detail::host_recording())
    detail::record(*r, std::function<void()>(std::forward<F>(work)));
  else
    work();
}

// True while this thread captures a graph (any device).
bool capturing();

// Memory handed out while a graph captures; kept as long as the graph or a tensor of it lives.
class CapturePool {
 public:
  explicit CapturePool(Device device);
  ~CapturePool();
  CapturePool(const CapturePool&) = delete;
  CapturePool& operator=(const CapturePool&) = delete;
  Device device() const { return m_device; }
  void* allocate(std::size_t bytes);
  void release(void* ptr);
  // Bytes the pool holds (its segments), for the step benchmark.
  std::size_t reserved() const;

 private:
  struct Impl;
  Device m_device;
  std::unique_ptr<Impl> m;
};
// The pool allocations on `device` come from on this thread (null: the usual allocators).
std::shared_ptr<CapturePool> capture_pool(const Device& device);

class Graph {
 public:
  Graph();
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Starts capturing the work this thread queues on `stream`: a created CUDA stream (the legacy
  // stream cannot be captured), or the host. Throws if this thread already captures.
  void begin_capture(const Stream& stream);
  // Ends the capture and makes the graph launchable. If the captured work threw, call abort_capture.
  void end_capture();
  // Drops what was captured so far (the capture failed); the graph is empty again.
  void abort_capture();
  // Runs the captured work on its stream (one launch, counted).
  void launch();
  // Drops the captured work and its pool (tensors of the pool still alive keep their memory).
  void reset();

  bool ready() const;
  Device device() const;
  // Recorded host calls or CUDA graph nodes.
  std::size_t nodes() const;
  // Bytes of the graph's pool.
  std::size_t pool_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> m;
};

}  // namespace gppf::runtime
