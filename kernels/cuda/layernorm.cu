// CUDA layer norm, f32 or bf16 activations with f32 statistics: the row functors the host runs too,
// one warp per row (kernels/cuda/rows.cuh). Backward's parameter gradients are two-level and
// deterministic, as batch norm's: blocks of 32 columns x 8 row-threads sum a slice of rows each
// (coalesced along the row), then one thread per column folds the slices in f64.
#include <algorithm>

#include "kernels/cuda/context.hpp"
#include "kernels/cuda/parallel_for.cuh"
#include "kernels/cuda/rows.cuh"
#include "kernels/functors/layernorm.hpp"
#include "kernels/layernorm.hpp"

namespace gppf::kernels::cuda {
namespace {

constexpr int kTileC = 32;
constexpr int kTileR = 8;

// Row slices per column tile: enough blocks to fill an H100 several times, at most one per 8 rows.
int row_slices(std::int64_t rows, std::int64_t d) {
  const std::int64_t tiles = (d + kTileC - 1) / kTileC;
  const std::int64_t want = std::max<std::int64_t>(1, 132 * 8 / tiles);
  return static_cast<int>(
      std::clamp<std::int64_t>((rows + kTileR - 1) / kTileR, 1, std::min<std::int64_t>(want, 4096)));
}

// part_g/part_b[slice * d + j]: the sums of dy * xhat and dy over rows slice * kTileR + threadIdx.y,
// in steps of slices * kTileR.
template <class T>
__global__ void param_partials_kernel(const T* x, const T* dy, const float* mean, const float* invstd,
                                      std::int64_t rows, std::int64_t d, float* part_g, float* part_b) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * kTileC + threadIdx.x;
  float g = 0.0f, b = 0.0f;
  if (j < d)
    for (std::int64_t r = static_cast<std::int64_t>(blockIdx.y) * kTileR + threadIdx.y; r < rows;
         r += static_cast<std::int64_t>(gridDim.y) * kTileR)
      layernorm_param_terms(x, dy, mean, invstd, r, r * d + j, g, b);
  __shared__ float sg[kTileR][kTileC + 1], sb[kTileR][kTileC + 1];
  sg[threadIdx.y][threadIdx.x] = g;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && j < d) {
    for (int k = 1; k < kTileR; ++k) {
      g += sg[k][threadIdx.x];
      b += sb[k][threadIdx.x];
    }
    part_g[blockIdx.y * d + j] = g;
    part_b[blockIdx.y * d + j] = b;
  }
}

template <class T>
void fwd(const LayerNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
         Tensor& save_mean, Tensor& save_invstd, const Stream& s) {
  const std::int64_t d = x.dim(-1), rows = x.numel() / d;
  for_each_row_cuda(rows, layernorm_fwd_row<T, WarpLanes>(p, x, gamma, beta, y, save_mean, save_invstd),
                    gppf::cuda::native(s));
}

template <class T>
void bwd(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd,
         Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode, const Stream& s) {
  const std::int64_t d = x.dim(-1), rows = x.numel() / d;
  const int slices = row_slices(rows, d);
  const cudaStream_t st = gppf::cuda::native(s);
  const T* xs = static_cast<const T*>(x.data());
  const T* dys = static_cast<const T*>(dy.data());
  const float* mean = save_mean.data_as<float>();
  const float* invstd = save_invstd.data_as<float>();
  for_each_row_cuda(rows, layernorm_bwd_data_row<T, WarpLanes>(x, dy, gamma, save_mean, save_invstd, dx), st);
  auto* part_g = static_cast<float*>(workspace(s, sizeof(float) * static_cast<std::size_t>(2 * slices * d)));
  float* part_b = part_g + slices * d;
  const dim3 grid(static_cast<unsigned>((d + kTileC - 1) / kTileC), static_cast<unsigned>(slices));
  param_partials_kernel<T><<<grid, dim3(kTileC, kTileR), 0, st>>>(xs, dys, mean, invstd, rows, d, part_g, part_b);
  GPPF_CUDA_CHECK(cudaGetLastError());
  parallel_for_cuda(d,
                    LayerNormParamFold{part_g, part_b, slices, d, dgamma.data_as<float>(), dbeta.data_as<float>(),
                                       param_mode == GradMode::Accumulate},
                    st);
}

}  // namespace

void layernorm_fwd(const LayerNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                   Tensor& save_mean, Tensor& save_invstd, const Stream& s) {
  if (x.dtype() == DType::BF16)
    fwd<bf16>(p, x, gamma, beta, y, save_mean, save_invstd, s);
  else
    fwd<float>(p, x, gamma, beta, y, save_mean, save_invstd, s);
}

void layernorm_bwd(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                   const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode,
                   const Stream& s) {
  if (x.dtype() == DType::BF16)
    bwd<bf16>(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode, s);
  else
    bwd<float>(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode, s);
}

}  // namespace gppf::kernels::cuda
