#include "src/train/staging.hpp"

#include <limits>

#include "core/log.hpp"

namespace gppf::train {

Upload::Upload(Device device) : m_copy(cuda::copy_stream(device.index)), m_event(cuda::create_event(device.index)) {}

Upload::~Upload() {
  try {
    // Freed now, the page-locked sources could be refilled by the loader (and the destinations handed
    // to other work) while the copies still run.
    if (!m_awaited && !m_keep.empty()) {
      if (m_finished)
        cuda::event_synchronize(m_event);
      else
        cuda::synchronize(m_copy);
    }
  } catch (const std::exception& e) {
    log::warn("input upload: ", e.what());
  }
  cuda::destroy_event(m_event);
}

void Upload::after(const Stream& stream) {
  const cuda::Event e = cuda::create_event(m_event.device.index);
  cuda::record_event(e, stream);
  cuda::stream_wait_event(m_copy, e);
  cuda::destroy_event(e);  // released by the driver once the wait is done
}

void Upload::copy(const Tensor& dst, const Tensor& src) {
  GPPF_CHECK(src.is_pinned() && dst.device().is_cuda(), "input upload: ", src.desc(), " to ", dst.desc(),
             " needs a page-locked source and a device destination");
  m_keep.push_back(src);
  m_keep.push_back(dst);
  Tensor d = dst;
  d.copy_from(src, m_copy);
}

void Upload::finish() {
  cuda::record_event(m_event, m_copy);
  m_finished = true;
}

std::vector<Tensor> Upload::await(const Stream& stream) {
  GPPF_CHECK(m_finished && !m_awaited, "input upload: awaited ", m_awaited ? "twice" : "before it was finished");
  cuda::stream_wait_event(stream, m_event);
  m_awaited = true;
  std::vector<Tensor> keep;
  keep.swap(m_keep);
  return keep;
}

Tensor UploadBuffers::acquire(int task, int slot, const Shape& shape, DType dtype, Device device, std::int64_t syncs,
                              bool& fresh) {
  constexpr std::int64_t kTaken = std::numeric_limits<std::int64_t>::max();
  std::array<Buffer, 2>& pair = m_buffers[{task, slot}];
  Buffer* pick = nullptr;
  for (Buffer& b : pair)
    if (b.tensor.defined() && b.free_at <= syncs && b.tensor.shape() == shape && b.tensor.dtype() == dtype) pick = &b;
  fresh = pick == nullptr;
  if (fresh) {
    // Replace a free buffer (of another shape), else the one released soonest; whoever still reads the
    // old tensor holds a reference to it.
    pick = pair[0].free_at <= pair[1].free_at ? &pair[0] : &pair[1];
    pick->tensor = Tensor::empty(shape, dtype, device);
  }
  pick->free_at = kTaken;
  return pick->tensor;
}

void UploadBuffers::read_until(int task, const Tensor& t, std::int64_t sync) {
  if (!t.defined()) return;
  for (auto& [key, pair] : m_buffers) {
    if (key.first != task) continue;
    for (Buffer& b : pair)
      if (b.tensor.defined() && b.tensor.data() == t.data()) b.free_at = sync;
  }
}

}  // namespace gppf::train
