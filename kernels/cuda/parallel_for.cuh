#pragma once
// The CUDA side of kernels/parallel_for.hpp: the same functor, launched as a grid-stride kernel.
#include <cuda_runtime.h>

#include <algorithm>

#include "core/cuda/check.hpp"
#include "kernels/parallel_for.hpp"

namespace gppf::kernels {

template <class F>
__global__ void grid_stride_kernel(std::int64_t n, F f) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x)
    f(i);
}

template <class F>
void parallel_for_cuda(std::int64_t n, const F& f, cudaStream_t stream) {
  if (n <= 0) return;
  constexpr int kBlock = 256;
  // Enough blocks to fill an H100 several times over; the stride loop covers the rest.
  const std::int64_t blocks = std::min<std::int64_t>((n + kBlock - 1) / kBlock, 132 * 32);
  grid_stride_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, stream>>>(n, f);
  GPPF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace gppf::kernels
