#pragma once
// The CUDA side of kernels/functors/rows.hpp: one warp per row, 8 warps per block, a grid-stride
// loop over rows (the row index is the same for the whole warp, so every lane reaches the shuffles).
#include <cuda_runtime.h>

#include <algorithm>

#include "core/cuda/check.hpp"
#include "kernels/functors/rows.hpp"

namespace gppf::kernels {

inline constexpr int kRowWarps = 8;

template <class F>
__global__ void warp_rows_kernel(std::int64_t rows, F f) {
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * blockDim.x / 32;
  for (std::int64_t r = warp; r < rows; r += warps) f(r);
}

template <class F>
void for_each_row_cuda(std::int64_t rows, const F& f, cudaStream_t stream) {
  if (rows <= 0) return;
  // Enough blocks to fill an H100 several times over; the stride loop covers the rest.
  const std::int64_t blocks = std::min<std::int64_t>((rows + kRowWarps - 1) / kRowWarps, 132 * 32);
  warp_rows_kernel<<<static_cast<unsigned>(blocks), kRowWarps * 32, 0, stream>>>(rows, f);
  GPPF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace gppf::kernels
