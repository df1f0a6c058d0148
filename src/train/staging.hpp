#pragma once
// Input batches on their way to a GPU (docs/ARCHITECTURE.md, "Input uploads"). The page-locked tensors
// of a micro-batch are copied on the device's copy stream and an event is recorded after the copies;
// the pass that reads them makes the compute stream wait for that event on the device. The trainer
// stages step s+1's batches during step s, so that the copies run while the GPU computes. On the host
// nothing is copied: a staged batch holds the loader's tensors.
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "core/cuda_runtime.hpp"
#include "core/tensor.hpp"

namespace gppf::train {

// Copies queued on a device's copy stream, and the event recorded after them. What they read
// (page-locked blocks, which go back to the pinned cache and the loader when freed) and write is kept
// until a compute stream has waited for the event (await), whose caller keeps it to that stream's
// next sync; dropped before that, the host waits for the event first.
class Upload {
 public:
  explicit Upload(Device device);
  ~Upload();
  Upload(const Upload&) = delete;
  Upload& operator=(const Upload&) = delete;
  // The copies queued after this wait for `stream`'s work queued so far on the device: a destination
  // fresh from the caching allocator may be a block that work still uses.
  void after(const Stream& stream);
  // dst <- src (page-locked host to device), on the copy stream.
  void copy(const Tensor& dst, const Tensor& src);
  // Records the event after the copies.
  void finish();
  // `stream` waits on the device for the copies. Returns what they read and wrote, for the caller to
  // keep to `stream`'s next sync (which then covers the copies).
  std::vector<Tensor> await(const Stream& stream);

 private:
  Stream m_copy;
  cuda::Event m_event;
  std::vector<Tensor> m_keep;
  bool m_finished = false, m_awaited = false;
};

// The device buffers uploads land in: two per task and tensor, taken in turn, so that the upload of
// step s+1, queued during step s, does not write the buffer that step s reads. A buffer is taken again
// once the compute stream has synchronised after the last pass that read it; otherwise (and when the
// shape changes) a new one comes from the caching allocator.
class UploadBuffers {
 public:
  // A buffer for tensor `slot` of `task`, free to write after the compute stream's `syncs` syncs.
  // `fresh`: newly allocated, so possibly a block that queued compute work still uses.
  Tensor acquire(int task, int slot, const Shape& shape, DType dtype, Device device, std::int64_t syncs, bool& fresh);
  // The passes that read `t` (a buffer of `task`) are queued before the compute stream's sync number
  // `sync`; until `acquire` is called with syncs >= sync, it stays taken.
  void read_until(int task, const Tensor& t, std::int64_t sync);

 private:
  struct Buffer {
    Tensor tensor;
    std::int64_t free_at = 0;  // free once the compute stream has made this many syncs
  };
  std::map<std::pair<int, int>, std::array<Buffer, 2>> m_buffers;
};

}  // namespace gppf::train
