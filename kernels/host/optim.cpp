#include "kernels/optim.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

namespace gppf::kernels::host {
namespace {

// Work is cut into chunks of at most kChunk elements of one tensor; a list of tensors runs as one
// OpenMP loop over all chunks. Reductions sum each tensor's chunks in chunk order, so a result
// depends on the tensor's size only, not on the thread count or on the other tensors of the list.
constexpr std::int64_t kChunk = 16384;
constexpr int kLanes = 4;

struct Chunks {
  std::vector<std::int64_t> first;  // first[k]: index of tensor k's first chunk; first[count]: total
  std::int64_t elements = 0;

  explicit Chunks(std::span<const std::int64_t> ns) : first(ns.size() + 1, 0) {
    for (std::size_t k = 0; k < ns.size(); ++k) {
      first[k + 1] = first[k] + (ns[k] + kChunk - 1) / kChunk;
      elements += ns[k];
    }
  }
  std::int64_t total() const { return first.back(); }
  // The tensor that chunk c belongs to.
  std::size_t tensor(std::int64_t c) const {
    return static_cast<std::size_t>(std::upper_bound(first.begin(), first.end(), c) - first.begin() - 1);
  }
  bool parallel() const { return total() > 1 && elements >= kParallelThreshold; }
};

template <class F>
void apply(std::span<const F> fs, std::span<const std::int64_t> ns) {
  const Chunks chunks(ns);
#pragma omp parallel for schedule(static) if (chunks.parallel())
  for (std::int64_t c = 0; c < chunks.total(); ++c) {
    const std::size_t k = chunks.tensor(c);
    const F f = fs[k];  // a local copy keeps the pointers in registers and lets the loop vectorize
    const std::int64_t lo = (c - chunks.first[k]) * kChunk, hi = std::min(lo + kChunk, ns[k]);
    for (std::int64_t i = lo; i < hi; ++i) f(i);
  }
}

template <class F>
void reduce(std::span<const F> fs, std::span<const std::int64_t> ns, std::span<double* const> outs) {
  const Chunks chunks(ns);
  std::vector<double> partial(static_cast<std::size_t>(2 * chunks.total()), 0.0);
#pragma omp parallel for schedule(static) if (chunks.parallel())
  for (std::int64_t c = 0; c < chunks.total(); ++c) {
    const std::size_t k = chunks.tensor(c);
    const F f = fs[k];
    const std::int64_t lo = (c - chunks.first[k]) * kChunk, hi = std::min(lo + kChunk, ns[k]);
    // kLanes interleaved accumulators break the floating-point add chain; the order stays fixed.
    double a0[kLanes] = {}, a1[kLanes] = {};
    std::int64_t i = lo;
    for (; i + kLanes <= hi; i += kLanes)
      for (int l = 0; l < kLanes; ++l) f(i + l, a0[l], a1[l]);
    for (; i < hi; ++i) f(i, a0[0], a1[0]);
    double s0 = 0.0, s1 = 0.0;
    for (int l = 0; l < kLanes; ++l) {
      s0 += a0[l];
      s1 += a1[l];
    }
    partial[static_cast<std::size_t>(2 * c)] = s0;
    partial[static_cast<std::size_t>(2 * c + 1)] = s1;
  }
  for (std::size_t k = 0; k < fs.size(); ++k) {
    double s0 = 0.0, s1 = 0.0;
    for (std::int64_t c = chunks.first[k]; c < chunks.first[k + 1]; ++c) {
      s0 += partial[static_cast<std::size_t>(2 * c)];
      s1 += partial[static_cast<std::size_t>(2 * c + 1)];
    }
    outs[k][0] = s0;
    outs[k][1] = s1;
  }
}

}  // namespace

void sgd_update(std::span<const SgdFunctor> fs, std::span<const std::int64_t> ns) { apply(fs, ns); }
void adamw_update(std::span<const AdamWFunctor> fs, std::span<const std::int64_t> ns) { apply(fs, ns); }
void lars_update(std::span<const LarsFunctor> fs, std::span<const std::int64_t> ns) { apply(fs, ns); }
void lamb_moments(std::span<const LambMomentsFunctor> fs, std::span<const std::int64_t> ns,
                  std::span<double* const> outs) {
  reduce(fs, ns, outs);
}
void lamb_apply(std::span<const LambApplyFunctor> fs, std::span<const std::int64_t> ns) { apply(fs, ns); }
void sum_squares(std::span<const SumSquaresFunctor> fs, std::span<const std::int64_t> ns,
                 std::span<double* const> outs) {
  reduce(fs, ns, outs);
}
void scale_(const ScaleFunctor& f, std::int64_t n) { parallel_for_host(n, f); }

void copy_tensors(std::span<const CopyFunctor> fs, std::span<const std::int64_t> ns) {
  for (std::size_t k = 0; k < fs.size(); ++k)
    if (ns[k] > 0) std::memcpy(fs[k].dst, fs[k].src, static_cast<std::size_t>(ns[k]) * sizeof(float));
}

}  // namespace gppf::kernels::host
