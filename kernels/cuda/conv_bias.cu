#include <algorithm>

#include "kernels/cuda/context.hpp"
#include "kernels/cuda/conv_bias.hpp"
#include "kernels/cuda/parallel_for.cuh"
#include "kernels/functors/conv.hpp"

namespace gppf::kernels::cuda {
namespace {

constexpr int kColsPerBlock = 32;  // one warp across 32 channels: coalesced NHWC rows
constexpr int kRowThreads = 8;
constexpr int kMaxRowBlocks = 256;

// partial[b, j] = sum of dy[m, j] over the rows m that block-row b owns (a grid-stride over rows).
__global__ void bias_grad_partial(const void* dy, FloatKind dy_kind, float* partial, std::int64_t rows,
                                  std::int64_t k) {
  __shared__ float sums[kRowThreads][kColsPerBlock];
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * kColsPerBlock + threadIdx.x;
  float acc = 0.0f;
  if (j < k)
    for (std::int64_t m = static_cast<std::int64_t>(blockIdx.y) * kRowThreads + threadIdx.y; m < rows;
         m += static_cast<std::int64_t>(gridDim.y) * kRowThreads)
      acc += load_float(dy, m * k + j, dy_kind);
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < k) {
    for (int t = 1; t < kRowThreads; ++t) acc += sums[t][threadIdx.x];
    partial[static_cast<std::int64_t>(blockIdx.y) * k + j] = acc;
  }
}

struct BiasGradFinish {
  const float* partial;
  void* dbias;
  FloatKind dbias_kind;
  std::int64_t k, blocks;
  bool accumulate;
  __device__ void operator()(std::int64_t j) const {
    float acc = accumulate ? load_float(dbias, j, dbias_kind) : 0.0f;
    for (std::int64_t b = 0; b < blocks; ++b) acc += partial[b * k + j];
    store_float(dbias, j, dbias_kind, acc);
  }
};

}  // namespace

void conv2d_add_bias(void* y, FloatKind y_kind, const void* bias, FloatKind bias_kind, std::int64_t rows,
                     std::int64_t k, const Stream& stream) {
  parallel_for_cuda(rows * k, ConvBiasAddFunctor{y, bias, k, y_kind, bias_kind}, gppf::cuda::native(stream));
}

void conv2d_bias_grad(const void* dy, FloatKind dy_kind, void* dbias, FloatKind dbias_kind, std::int64_t rows,
                      std::int64_t k, bool accumulate, const Stream& stream) {
  const std::int64_t col_blocks = (k + kColsPerBlock - 1) / kColsPerBlock;
  const std::int64_t row_blocks = std::clamp<std::int64_t>((rows + 1023) / 1024, 1, kMaxRowBlocks);
  auto* partial = static_cast<float*>(workspace(stream, static_cast<std::size_t>(row_blocks * k) * sizeof(float)));
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks));
  const dim3 block(kColsPerBlock, kRowThreads);
  bias_grad_partial<<<grid, block, 0, gppf::cuda::native(stream)>>>(dy, dy_kind, partial, rows, k);
  GPPF_CUDA_CHECK(cudaGetLastError());
  parallel_for_cuda(k, BiasGradFinish{partial, dbias, dbias_kind, k, row_blocks, accumulate},
                    gppf::cuda::native(stream));
}

}  // namespace gppf::kernels::cuda
