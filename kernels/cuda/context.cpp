#include "kernels/cuda/context.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "core/cuda_runtime.hpp"
#include "core/graph.hpp"

namespace gppf::kernels::cuda {
namespace {

struct Entry {
  Context ctx;
  void* scratch = nullptr;
  std::size_t scratch_bytes = 0;
};

std::mutex g_mutex;
std::map<std::pair<int, void*>, std::unique_ptr<Entry>> g_entries;

Entry& entry(const Stream& stream) {
  const int device = stream.device.is_cuda() ? stream.device.index : 0;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& slot = g_entries[{device, stream.handle}];
  if (!slot) {
    slot = std::make_unique<Entry>();
    gppf::cuda::set_device(device);
    slot->ctx.device = device;
    slot->ctx.stream = gppf::cuda::native(stream);
    GPPF_CUDNN_CHECK(cudnnCreate(&slot->ctx.cudnn));
    GPPF_CUDNN_CHECK(cudnnSetStream(slot->ctx.cudnn, slot->ctx.stream));
    GPPF_CUBLAS_CHECK(cublasCreate(&slot->ctx.cublas));
    GPPF_CUBLAS_CHECK(cublasSetStream(slot->ctx.cublas, slot->ctx.stream));
  }
  return *slot;
}

}  // namespace

Context& context(const Stream& stream) { return entry(stream).ctx; }

void* workspace(const Stream& stream, std::size_t bytes) {
  Entry& e = entry(stream);
  if (bytes > e.scratch_bytes) {
    // A captured graph keeps the old block's address: it must not go back to the allocator.
    GPPF_CHECK(!gppf::runtime::capturing(), "CUDA scratch memory grew from ", e.scratch_bytes, " to ", bytes,
               " bytes inside a graph capture (the eager step before the capture should have sized it)");
    // The old block may still be read by queued work on this stream; freeing it into the caching
    // allocator is safe because later allocations on the same stream are ordered after that work.
    if (e.scratch) gppf::cuda::free_device(e.scratch, e.ctx.device);
    e.scratch = gppf::cuda::malloc_device(bytes, e.ctx.device);
    e.scratch_bytes = bytes;
  }
  return e.scratch;
}

}  // namespace gppf::kernels::cuda
