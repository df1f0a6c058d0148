#pragma once
// Row-wise kernels written once (layer norm, softmax): a functor with
// `GPPF_HD void operator()(std::int64_t row) const` walks one row with the lanes of its `Lanes`
// parameter. On the host a row is one thread's (SerialLanes, an OpenMP loop over rows:
// for_each_row_host); on CUDA it is one warp's (WarpLanes, kernels/cuda/rows.cuh), whose 32 lanes
// stride along the row and combine their partials with butterfly shuffles. Every lane ends with the
// same bits (floating-point addition commutes), so each row's result is deterministic.
#include <math.h>  // fmaxf by the global name CUDA device code has too

#include <cstdint>

#include "kernels/parallel_for.hpp"

namespace gppf::kernels {

struct SerialLanes {
  static constexpr int kCount = 1;
  GPPF_HD static constexpr int lane() { return 0; }
  GPPF_HD static float sum(float v) { return v; }
  GPPF_HD static float max(float v) { return v; }
};

#if defined(__CUDACC__)
struct WarpLanes {
  static constexpr int kCount = 32;
  GPPF_HD static int lane() {
#if defined(__CUDA_ARCH__)
    return static_cast<int>(threadIdx.x) & 31;
#else
    return 0;
#endif
  }
  GPPF_HD static float sum(float v) {
#if defined(__CUDA_ARCH__)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
#endif
    return v;
  }
  GPPF_HD static float max(float v) {
#if defined(__CUDA_ARCH__)
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
#endif
    return v;
  }
};
#endif

// Rows in parallel over OpenMP threads (static schedule: deterministic for a given thread count,
// and every row's result independent of it), serially when the whole op is too small to fork for.
template <class F>
void for_each_row_host(std::int64_t rows, std::int64_t cols, const F& f) {
#pragma omp parallel for schedule(static) if (rows > 1 && rows * cols >= kParallelThreshold)
  for (std::int64_t r = 0; r < rows; ++r) f(r);
}

}  // namespace gppf::kernels
