#pragma once
// Problems and bit-level helpers shared by the head layout tests (tests/transformer/test_heads.cpp,
// tests/cuda/test_heads.cpp).
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "kernels/heads.hpp"

namespace gppf::test {

struct HeadsCase {
  std::int64_t n, t, heads, dh;
  Shape qkv() const { return {n, t, 3 * heads * dh}; }
  Shape tokens() const { return {n, t, heads * dh}; }
  Shape per_head() const { return {n, heads, t, dh}; }
  kernels::HeadsShape layout(std::int64_t parts) const { return {n, t, parts, heads, dh}; }
  std::string str() const {
    return "N " + std::to_string(n) + " T " + std::to_string(t) + " H " + std::to_string(heads) + " Dh " +
           std::to_string(dh);
  }
};

// A host tensor of random bit patterns: NaNs with payloads, infinities, signed zeros and subnormals
// among them, which only a copy of bits (no conversion on the way) keeps.
inline Tensor random_bits(const Shape& shape, DType dtype, std::uint64_t seed) {
  Tensor t = Tensor::empty(shape, dtype);
  std::mt19937_64 rng(seed);
  auto* p = static_cast<unsigned char*>(t.data());
  for (std::size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(rng());
  return t;
}

// The raw bytes of t (read back from a device).
inline std::vector<unsigned char> bytes_of(const Tensor& t) {
  const Tensor h = t.device().is_host() ? t : t.to(Device::host());
  std::vector<unsigned char> out(h.nbytes());
  if (!out.empty()) std::memcpy(out.data(), h.data(), out.size());
  return out;
}

}  // namespace gppf::test
