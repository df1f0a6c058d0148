#pragma once
// Many tensors in one launch (the multi-tensor optimizer): up to TensorPack::kCapacity functors, each
// bound to its own tensor, travel in the kernel's parameters with the running element counts, and
// element i of the pack finds its tensor by binary search. CUDA launches one kernel per pack instead of
// one per tensor; the host runs the same mapping in tests (tests/optim/test_multi_tensor.cpp), and the
// launch counters (core/counters.hpp) count packs, so a host run reports the GPU's launches.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/hd.hpp"

namespace gppf::kernels {

// Below CUDA's 4 KiB of kernel parameters, with room for the grid-stride kernel's own count.
inline constexpr std::size_t kPackParamBytes = 3840;

template <class F>
struct TensorPack {
  static constexpr int kCapacity =
      static_cast<int>((kPackParamBytes - sizeof(int)) / (sizeof(F) + sizeof(std::int64_t)));
  F f[kCapacity];
  std::int64_t end[kCapacity];  // elements of tensors 0..k together
  int count = 0;

  std::int64_t total() const { return count > 0 ? end[count - 1] : 0; }
  GPPF_HD void operator()(std::int64_t i) const {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (i < end[mid])
        hi = mid;
      else
        lo = mid + 1;
    }
    f[lo](i - (lo > 0 ? end[lo - 1] : 0));
  }
};

// How many packs of capacity `capacity` hold `tensors` tensors (the launch counters' arithmetic; no
// pack is built for it).
inline std::int64_t pack_count(std::int64_t tensors, int capacity) { return (tensors + capacity - 1) / capacity; }

// The packs of a list (tensors of no elements skipped), in list order: each element of each tensor
// is visited once, as by one launch per tensor.
template <class F>
std::vector<TensorPack<F>> make_packs(std::span<const F> fs, std::span<const std::int64_t> ns) {
  std::vector<TensorPack<F>> packs;
  for (std::size_t k = 0; k < fs.size(); ++k) {
    if (ns[k] <= 0) continue;
    if (packs.empty() || packs.back().count == TensorPack<F>::kCapacity) packs.emplace_back();
    TensorPack<F>& p = packs.back();
    p.f[p.count] = fs[k];
    p.end[p.count] = p.total() + ns[k];
    ++p.count;
  }
  return packs;
}

// The reductions (sums of squares, LAMB's norms) of many tensors, each with its own output: every
// tensor is cut into chunks of kReduceChunk elements (at least one chunk, so an empty tensor gets its
// zeros), one CUDA block sums one chunk, and a second launch folds each tensor's chunk sums in order.
// Two launches per pack; the summation order depends only on the tensors' sizes.
inline constexpr std::int64_t kReduceChunk = 16384;

template <class F>
struct ReducePack {
  static constexpr int kCapacity =
      static_cast<int>((kPackParamBytes - sizeof(int)) / (sizeof(F) + 2 * sizeof(std::int64_t) + sizeof(double*)));
  F f[kCapacity];
  std::int64_t n[kCapacity];
  std::int64_t chunk_end[kCapacity];  // chunks of tensors 0..k together
  double* out[kCapacity];             // two doubles each, on the tensors' device
  int count = 0;

  std::int64_t chunks() const { return count > 0 ? chunk_end[count - 1] : 0; }
  GPPF_HD std::int64_t first_chunk(int k) const { return k > 0 ? chunk_end[k - 1] : 0; }
  GPPF_HD int tensor_of_chunk(std::int64_t c) const {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (c < chunk_end[mid])
        hi = mid;
      else
        lo = mid + 1;
    }
    return lo;
  }
  // Element range [begin, end) of chunk c of tensor k.
  GPPF_HD void chunk_range(int k, std::int64_t c, std::int64_t& begin, std::int64_t& end) const {
    begin = (c - first_chunk(k)) * kReduceChunk;
    end = begin + kReduceChunk < n[k] ? begin + kReduceChunk : n[k];
  }
};

template <class F>
std::vector<ReducePack<F>> make_reduce_packs(std::span<const F> fs, std::span<const std::int64_t> ns,
                                             std::span<double* const> outs) {
  std::vector<ReducePack<F>> packs;
  for (std::size_t k = 0; k < fs.size(); ++k) {
    if (packs.empty() || packs.back().count == ReducePack<F>::kCapacity) packs.emplace_back();
    ReducePack<F>& p = packs.back();
    const std::int64_t chunks = ns[k] > 0 ? (ns[k] + kReduceChunk - 1) / kReduceChunk : 1;
    p.f[p.count] = fs[k];
    p.n[p.count] = ns[k];
    p.out[p.count] = outs[k];
    p.chunk_end[p.count] = p.chunks() + chunks;
    ++p.count;
  }
  return packs;
}

}  // namespace gppf::kernels
