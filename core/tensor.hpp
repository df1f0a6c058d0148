#pragma once
// A dense, contiguous tensor: shape, dtype, device, shared storage. Images are NHWC (DESIGN.md).
// Copies between devices are explicit (`to`, `copy_from`); nothing syncs behind the caller's back.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"

namespace gppf {

namespace runtime {
class CapturePool;
}

using Shape = std::vector<std::int64_t>;
std::string shape_str(const Shape& shape);
std::int64_t shape_numel(const Shape& shape);

// Owns one allocation; host memory is 64-byte aligned, pinned when asked for. While a graph captures,
// from the graph's pool (core/graph.hpp).
class Storage {
 public:
  Storage(std::size_t bytes, Device device, bool pinned = false);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return m_data; }
  std::size_t bytes() const { return m_bytes; }
  Device device() const { return m_device; }
  bool pinned() const { return m_pinned; }

 private:
  void* m_data = nullptr;
  std::size_t m_bytes = 0;
  Device m_device;
  bool m_pinned = false;
  std::shared_ptr<runtime::CapturePool> m_pool;  // allocated while a graph captured (core/graph.hpp)
};

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised memory.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::host(), bool pinned = false);
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::host());
  // Host f32 tensor holding `values` (numel must match).
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values);

  bool defined() const { return static_cast<bool>(m_storage); }
  const Shape& shape() const { return m_shape; }
  int ndim() const { return static_cast<int>(m_shape.size()); }
  // Negative indices count from the end.
  std::int64_t dim(int i) const;
  std::int64_t numel() const { return shape_numel(m_shape); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(m_dtype); }
  DType dtype() const { return m_dtype; }
  Device device() const { return m_storage ? m_storage->device() : Device::host(); }
  bool is_pinned() const { return m_storage && m_storage->pinned(); }

  void* data() const;
  // Typed pointer; throws when T does not match dtype().
  template <class T>
  T* data_as() const {
    GPPF_CHECK(dtype_of<T>::value == m_dtype, "tensor ", desc(), " accessed as ", dtype_name(dtype_of<T>::value));
    return static_cast<T*>(data());
  }

  // A view with another shape of the same numel (one dimension may be -1).
  Tensor reshape(const Shape& shape) const;
  // A view of rows [start, start+length) along dimension 0.
  Tensor narrow0(std::int64_t start, std::int64_t length) const;
  // A copy on `device` (ordered on `stream` when a CUDA device is involved; synchronous otherwise).
  Tensor to(Device device, const Stream& stream = Stream::host()) const;
  // A copy on the same device (ordered on `stream` on CUDA).
  Tensor clone(const Stream& stream = Stream::host()) const;
  // Copies src into this tensor; shapes' numel and dtypes must match.
  void copy_from(const Tensor& src, const Stream& stream = Stream::host());
  void zero_(const Stream& stream = Stream::host());
  // Host f32 only: fills with a constant.
  void fill_(float value);

  // Host copy as float (any floating dtype or integer dtype), for tests and logging.
  std::vector<float> to_float_vector() const;

  // "f32[2,28,28,1]@host" for error messages.
  std::string desc() const;

 private:
  std::shared_ptr<Storage> m_storage;
  std::size_t m_offset = 0;  // bytes
  Shape m_shape;
  DType m_dtype = DType::F32;
};

// t's values where the host can read them: t itself on the host, else a host copy once `stream` has
// run up to it. A sync on every device (core/counters.hpp), so host tests count the waits of a GPU step.
Tensor read_back(const Tensor& t, const Stream& stream = Stream::host());
// The values of several f32 tensors of one device, concatenated, with one sync.
std::vector<float> read_back_all(const std::vector<const Tensor*>& ts, const Stream& stream = Stream::host());

// Throws "<op>: <what> expected <shape>, got <desc>" when the shape differs.
void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected);
void check_dtype(const char* op, const char* what, const Tensor& t, DType expected);
void check_same_device(const char* op, const Tensor& a, const Tensor& b);

}  // namespace gppf
