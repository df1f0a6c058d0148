#include <algorithm>

#include "kernels/cuda/context.hpp"
#include "kernels/cuda/parallel_for.cuh"
#include "kernels/optim.hpp"

namespace gppf::kernels::cuda {
namespace {

constexpr int kBlock = 256;
constexpr std::int64_t kMaxBlocks = 1024;

// Tree sum of a block's two accumulators in shared memory; thread 0 ends up with the totals.
__device__ void block_sum(double& a0, double& a1) {
  __shared__ double s0[kBlock], s1[kBlock];
  s0[threadIdx.x] = a0;
  s1[threadIdx.x] = a1;
  __syncthreads();
  for (int half = kBlock / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) {
      s0[threadIdx.x] += s0[threadIdx.x + half];
      s1[threadIdx.x] += s1[threadIdx.x + half];
    }
    __syncthreads();
  }
  a0 = s0[0];
  a1 = s1[0];
}

// Stage 1: block b writes its partial sums to partial[2b], partial[2b+1]. The grid size is a
// function of n alone, so the summation order (and the result) is the same on every run and GPU.
template <class F>
__global__ void reduce_blocks(std::int64_t n, F f, double* partial) {
  double a0 = 0.0, a1 = 0.0;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(kBlock) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(kBlock) * gridDim.x)
    f(i, a0, a1);
  block_sum(a0, a1);
  if (threadIdx.x == 0) {
    partial[2 * blockIdx.x] = a0;
    partial[2 * blockIdx.x + 1] = a1;
  }
}

// Stage 2: one block folds the partials in a fixed order.
__global__ void reduce_partials(int count, const double* partial, double* out) {
  double a0 = 0.0, a1 = 0.0;
  for (int b = threadIdx.x; b < count; b += kBlock) {
    a0 += partial[2 * b];
    a1 += partial[2 * b + 1];
  }
  block_sum(a0, a1);
  if (threadIdx.x == 0) {
    out[0] = a0;
    out[1] = a1;
  }
}

template <class F>
void reduce(const F& f, std::int64_t n, double* out, const Stream& stream) {
  const cudaStream_t s = gppf::cuda::native(stream);
  const std::int64_t blocks = std::clamp<std::int64_t>((n + 4 * kBlock - 1) / (4 * kBlock), 1, kMaxBlocks);
  if (blocks == 1) {
    reduce_blocks<<<1, kBlock, 0, s>>>(n, f, out);
  } else {
    // Always the largest size, so that a list of reductions never makes the workspace grow mid-list.
    auto* partial = static_cast<double*>(workspace(stream, static_cast<std::size_t>(2 * kMaxBlocks) * sizeof(double)));
    reduce_blocks<<<static_cast<unsigned>(blocks), kBlock, 0, s>>>(n, f, partial);
    GPPF_CUDA_CHECK(cudaGetLastError());
    reduce_partials<<<1, kBlock, 0, s>>>(static_cast<int>(blocks), partial, out);
  }
  GPPF_CUDA_CHECK(cudaGetLastError());
}

// One launch per tensor, in list order on the stream.
template <class F>
void apply(std::span<const F> fs, std::span<const std::int64_t> ns, const Stream& stream) {
  for (std::size_t k = 0; k < fs.size(); ++k) parallel_for_cuda(ns[k], fs[k], gppf::cuda::native(stream));
}
template <class F>
void reduce_all(std::span<const F> fs, std::span<const std::int64_t> ns, std::span<double* const> outs,
                const Stream& stream) {
  for (std::size_t k = 0; k < fs.size(); ++k) reduce(fs[k], ns[k], outs[k], stream);
}
}  // namespace

void sgd_update(std::span<const SgdFunctor> fs, std::span<const std::int64_t> ns, const Stream& stream) {
  apply(fs, ns, stream);
}
void adamw_update(std::span<const AdamWFunctor> fs, std::span<const std::int64_t> ns, const Stream& stream) {
  apply(fs, ns, stream);
}
void lars_update(std::span<const LarsFunctor> fs, std::span<const std::int64_t> ns, const Stream& stream) {
  apply(fs, ns, stream);
}
void lamb_moments(std::span<const LambMomentsFunctor> fs, std::span<const std::int64_t> ns,
                  std::span<double* const> outs, const Stream& stream) {
  reduce_all(fs, ns, outs, stream);
}
void lamb_apply(std::span<const LambApplyFunctor> fs, std::span<const std::int64_t> ns, const Stream& stream) {
  apply(fs, ns, stream);
}
void sum_squares(std::span<const SumSquaresFunctor> fs, std::span<const std::int64_t> ns, std::span<double* const> outs,
                 const Stream& stream) {
  reduce_all(fs, ns, outs, stream);
}
void scale_(const ScaleFunctor& f, std::int64_t n, const Stream& stream) {
  parallel_for_cuda(n, f, gppf::cuda::native(stream));
}

}  // namespace gppf::kernels::cuda
