#pragma once
// Seeded randomness whose sequences are fixed by this code (not by the standard library's
// implementation-defined distributions), so data order and augmentations are the same on every
// machine and compiler.
#include <cstdint>
#include <utility>
#include <vector>

namespace gppf::io {

inline std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Hashes a list of integers into one seed.
inline std::uint64_t hash_seed(std::initializer_list<std::uint64_t> parts) {
  std::uint64_t s = 0x243f6a8885a308d3ULL;
  for (std::uint64_t p : parts) {
    s ^= p + 0x9e3779b97f4a7c15ULL + (s << 6) + (s >> 2);
    splitmix64(s);
  }
  std::uint64_t t = s;
  return splitmix64(t);
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : m_state(seed) {}
  std::uint64_t next() { return splitmix64(m_state); }
  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) {
    return n == 0 ? 0 : static_cast<std::uint64_t>(uniform() * static_cast<double>(n)) % n;
  }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  std::uint64_t m_state;
};

}  // namespace gppf::io
