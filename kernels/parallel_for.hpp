#pragma once
// Kernels written once: a functor with `GPPF_HD void operator()(std::int64_t i) const` runs on the
// host as an OpenMP loop (parallel_for_host) and on CUDA as a grid-stride kernel
// (parallel_for_cuda in kernels/cuda/parallel_for.cuh). This is Kokkos's model without Kokkos
// (DESIGN.md, "portable kernels").
#include <cstdint>

#include "core/hd.hpp"

namespace gppf::kernels {

// Below this many iterations the OpenMP fork costs more than the loop.
inline constexpr std::int64_t kParallelThreshold = 4096;

template <class F>
void parallel_for_host(std::int64_t n, const F& f) {
  if (n < kParallelThreshold) {
    for (std::int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) f(i);
}

}  // namespace gppf::kernels
