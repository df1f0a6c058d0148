#pragma once
// Where a tensor lives, and the stream its work is ordered on. Streams are opaque here so that host
// code never includes CUDA headers; kernels/cuda/ casts the handle back to cudaStream_t.
#include <string>

namespace gppf {

struct Device {
  enum class Kind : unsigned char { Host, Cuda };
  Kind kind = Kind::Host;
  int index = 0;

  static Device host() { return {}; }
  static Device cuda(int index = 0) { return {Kind::Cuda, index}; }
  bool is_host() const { return kind == Kind::Host; }
  bool is_cuda() const { return kind == Kind::Cuda; }
  std::string str() const { return is_host() ? std::string("host") : "cuda:" + std::to_string(index); }
  // Parses "host", "cpu", "cuda" or "cuda:N".
  static Device parse(const std::string& name);
  friend bool operator==(const Device&, const Device&) = default;
};

// A CUDA stream on one device (handle == nullptr: the legacy default stream), or the host.
struct Stream {
  Device device;
  void* handle = nullptr;

  static Stream host() { return {}; }
};

}  // namespace gppf
