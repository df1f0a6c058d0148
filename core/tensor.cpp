#include "core/tensor.hpp"

#include <malloc.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/counters.hpp"
#include "core/cuda_runtime.hpp"
#include "core/graph.hpp"

namespace gppf {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

namespace {
// A training step allocates and frees the same large activation buffers every step. glibc serves
// blocks above 128 KiB with fresh mmap()s and returns them on free(), so every step would pay the
// page faults again; keeping them in the heap makes the second step reuse the first one's pages.
void keep_large_blocks_in_heap() {
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)done;
}
}  // namespace

Storage::Storage(std::size_t bytes, Device device, bool pinned) : m_bytes(bytes), m_device(device), m_pinned(pinned) {
  if (bytes == 0) return;
  keep_large_blocks_in_heap();
  if (!pinned) m_pool = runtime::capture_pool(device);
  if (m_pool) {
    m_data = m_pool->allocate(bytes);
  } else if (device.is_cuda()) {
    m_data = cuda::malloc_device(bytes, device.index);
  } else if (pinned) {
    m_data = cuda::malloc_pinned(bytes);
  } else {
    // Large buffers (activations, loader batches) go on transparent huge pages where the kernel
    // allows it on request: a fresh 19 MB batch otherwise takes ~4,700 page faults to fill.
    constexpr std::size_t kHuge = std::size_t(2) << 20;
    const bool huge = bytes >= 2 * kHuge;
    const std::size_t align = huge ? kHuge : 64;
    m_data = std::aligned_alloc(align, (bytes + align - 1) / align * align);
    GPPF_CHECK(m_data, "host allocation of ", bytes, " bytes failed");
    if (huge) madvise(m_data, (bytes + align - 1) / align * align, MADV_HUGEPAGE);
  }
}

Storage::~Storage() {
  if (!m_data) return;
  if (m_pool)
    m_pool->release(m_data);
  else if (m_device.is_cuda())
    cuda::free_device(m_data, m_device.index);
  else if (m_pinned)
    cuda::free_pinned(m_data);
  else
    std::free(m_data);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, bool pinned) {
  for (auto d : shape) GPPF_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.m_shape = shape;
  t.m_dtype = dtype;
  t.m_storage =
      std::make_shared<Storage>(static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype), device, pinned);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  if (device.is_cuda()) cuda::synchronize(Stream{device, nullptr});
  return t;
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values) {
  GPPF_CHECK(shape_numel(shape) == static_cast<std::int64_t>(values.size()), "from_vector: shape ", shape_str(shape),
             " needs ", shape_numel(shape), " values, got ", values.size());
  Tensor t = empty(shape, DType::F32);
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
  return t;
}

std::int64_t Tensor::dim(int i) const {
  const int n = ndim();
  const int j = i < 0 ? i + n : i;
  GPPF_CHECK(j >= 0 && j < n, "dimension ", i, " out of range for ", desc());
  return m_shape[static_cast<std::size_t>(j)];
}

void* Tensor::data() const {
  GPPF_CHECK(defined(), "access to an undefined tensor");
  return static_cast<char*>(m_storage->data()) + m_offset;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  std::int64_t known = 1;
  int infer = -1;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      GPPF_CHECK(infer < 0, "reshape of ", desc(), " to ", shape_str(shape), ": more than one -1");
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    GPPF_CHECK(known > 0 && numel() % known == 0, "reshape of ", desc(), " to ", shape_str(shape), ": does not divide");
    s[static_cast<std::size_t>(infer)] = numel() / known;
  }
  GPPF_CHECK(shape_numel(s) == numel(), "reshape of ", desc(), " to ", shape_str(shape), ": element count differs");
  Tensor t = *this;
  t.m_shape = s;
  return t;
}

Tensor Tensor::narrow0(std::int64_t start, std::int64_t length) const {
  GPPF_CHECK(ndim() >= 1 && start >= 0 && length >= 0 && start + length <= m_shape[0], "narrow0(", start, ", ", length,
             ") out of range for ", desc());
  Tensor t = *this;
  const std::int64_t row = m_shape[0] ? numel() / m_shape[0] : 0;
  t.m_offset += static_cast<std::size_t>(start * row) * dtype_size(m_dtype);
  t.m_shape[0] = length;
  return t;
}

namespace {
cuda::CopyKind copy_kind(Device dst, Device src) {
  if (dst.is_cuda() && src.is_cuda()) return cuda::CopyKind::DeviceToDevice;
  if (dst.is_cuda()) return cuda::CopyKind::HostToDevice;
  if (src.is_cuda()) return cuda::CopyKind::DeviceToHost;
  return cuda::CopyKind::HostToHost;
}
}  // namespace

void Tensor::copy_from(const Tensor& src, const Stream& stream) {
  GPPF_CHECK(src.numel() == numel() && src.dtype() == dtype(), "copy_from: ", src.desc(), " into ", desc());
  if (nbytes() == 0) return;
  runtime::count_launch();
  const auto kind = copy_kind(device(), src.device());
  if (kind == cuda::CopyKind::HostToHost) {
    runtime::host_launch([dst = *this, src] { std::memcpy(dst.data(), src.data(), dst.nbytes()); });
    return;
  }
  // From pageable host memory CUDA stages the copy after the stream's earlier work: the host waits.
  if (kind == cuda::CopyKind::HostToDevice && !src.is_pinned()) runtime::count_sync();
  cuda::memcpy_async(data(), src.data(), nbytes(), kind, stream);
  // Pageable host memory makes the copy synchronous for the host side anyway; with a pinned
  // buffer the caller owns the synchronisation (explicit, per STYLE.md).
}

Tensor Tensor::to(Device dev, const Stream& stream) const {
  Tensor t = empty(m_shape, m_dtype, dev);
  t.copy_from(*this, stream);
  if (dev.is_host() && device().is_cuda()) cuda::synchronize(stream);
  return t;
}

Tensor Tensor::clone(const Stream& stream) const { return to(device(), stream); }

void Tensor::zero_(const Stream& stream) {
  if (nbytes() == 0) return;
  runtime::count_launch();
  if (device().is_cuda())
    cuda::memset_async(data(), 0, nbytes(), stream);
  else
    runtime::host_launch([t = *this] { std::memset(t.data(), 0, t.nbytes()); });
}

void Tensor::fill_(float value) {
  GPPF_CHECK(device().is_host() && dtype() == DType::F32, "fill_ needs a host f32 tensor, got ", desc());
  runtime::host_launch([t = *this, value] { std::fill_n(t.data_as<float>(), t.numel(), value); });
}

Tensor read_back(const Tensor& t, const Stream& stream) {
  if (!t.device().is_host()) return t.to(Device::host(), stream);  // synchronises (counted there)
  runtime::count_sync();
  return t;
}

std::vector<float> read_back_all(const std::vector<const Tensor*>& ts, const Stream& stream) {
  if (ts.empty()) return {};
  std::int64_t total = 0;
  for (const Tensor* t : ts) {
    GPPF_CHECK(t->dtype() == DType::F32 && t->device() == ts.front()->device(), "read_back_all: ", t->desc(),
               " is not f32 on ", ts.front()->device().str());
    total += t->numel();
  }
  Tensor all = Tensor::empty({total}, DType::F32, ts.front()->device());
  std::int64_t at = 0;
  for (const Tensor* t : ts) {
    all.narrow0(at, t->numel()).copy_from(*t, stream);
    at += t->numel();
  }
  const Tensor host = read_back(all, stream);
  return std::vector<float>(host.data_as<float>(), host.data_as<float>() + total);
}

std::vector<float> Tensor::to_float_vector() const {
  const Tensor h = device().is_host() ? *this : to(Device::host());
  const std::int64_t n = numel();
  std::vector<float> out(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    switch (m_dtype) {
      case DType::F32: out[k] = h.data_as<float>()[i]; break;
      case DType::BF16: out[k] = bf16_to_float(h.data_as<bf16>()[i]); break;
      case DType::F16: out[k] = f16_to_float(h.data_as<f16>()[i]); break;
      case DType::I32: out[k] = static_cast<float>(h.data_as<std::int32_t>()[i]); break;
      case DType::I64: out[k] = static_cast<float>(h.data_as<std::int64_t>()[i]); break;
      case DType::U8: out[k] = h.data_as<std::uint8_t>()[i]; break;
    }
  }
  return out;
}

std::string Tensor::desc() const {
  if (!defined()) return "undefined";
  return str(dtype_name(m_dtype), shape_str(m_shape), "@", device().str());
}

void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  GPPF_CHECK(t.defined() && t.shape() == expected, op, ": ", what, " expected shape ", shape_str(expected), ", got ",
             t.desc());
}

void check_dtype(const char* op, const char* what, const Tensor& t, DType expected) {
  GPPF_CHECK(t.defined() && t.dtype() == expected, op, ": ", what, " expected dtype ", dtype_name(expected), ", got ",
             t.desc());
}

void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  GPPF_CHECK(a.device() == b.device(), op, ": tensors on different devices: ", a.desc(), " and ", b.desc());
}

}  // namespace gppf
