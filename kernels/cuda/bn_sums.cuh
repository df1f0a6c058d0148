#pragma once
// The per-tile sums of CUDA batch norm (kernels/cuda/batchnorm.cu, kernels/cuda/segments.cu): a block
// of kBnTileC channels x kBnTileR row-threads sums rows [first + threadIdx.y, end) in steps of `step`,
// coalesced along the channels, and row thread 0 writes the block's sums.
#include <cstdint>

#include "kernels/functors/batchnorm.hpp"

namespace gppf::kernels::cuda {

inline constexpr int kBnTileC = 32;
inline constexpr int kBnTileR = 8;

// Forward (kBwd false): a = sum(x - center), b = sum((x - center)^2). Backward: a = sum(g),
// b = sum(g * (x - center)), g = dy masked by y > 0 when relu. Channel c = blockIdx.x * kBnTileC +
// threadIdx.x; *out_a / *out_b written when c < channels.
template <class T, bool kBwd>
__device__ void bn_tile_sums(const T* x, const T* y, const T* dy, float center, std::int64_t first, std::int64_t end,
                             std::int64_t step, std::int64_t channels, bool relu, float* out_a, float* out_b) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kBnTileC + threadIdx.x;
  float a = 0.0f, b = 0.0f;
  if (c < channels) {
    for (std::int64_t r = first + threadIdx.y; r < end; r += step) {
      const std::int64_t i = r * channels + c;
      const float d = normpool::load(x[i]) - center;
      if constexpr (kBwd) {
        float g = normpool::load(dy[i]);
        if (relu && !(normpool::load(y[i]) > 0.0f)) g = 0.0f;
        a += g;
        b += g * d;
      } else {
        a += d;
        b += d * d;
      }
    }
  }
  __shared__ float sa[kBnTileR][kBnTileC + 1], sb[kBnTileR][kBnTileC + 1];
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && c < channels) {
    for (int k = 1; k < kBnTileR; ++k) {
      a += sa[k][threadIdx.x];
      b += sb[k][threadIdx.x];
    }
    *out_a = a;
    *out_b = b;
  }
}

}  // namespace gppf::kernels::cuda
