#include <algorithm>

#include "kernels/cuda/context.hpp"
#include "kernels/cuda/parallel_for.cuh"
#include "kernels/functors/multi_tensor.hpp"
#include "kernels/optim.hpp"

namespace gppf::kernels::cuda {
namespace {

constexpr int kBlock = 256;

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

// One launch per pack of tensors (kernels/functors/multi_tensor.hpp), in list order on the stream.
template <class F>
void apply(std::span<const F> fs, std::span<const std::int64_t> ns, const Stream& stream) {
  for (const TensorPack<F>& pack : make_packs(fs, ns))
    parallel_for_cuda(pack.total(), pack, gppf::cuda::native(stream));
}
// A pack of reductions (kernels/functors/multi_tensor.hpp): block c sums chunk c of its tensor.
template <class F>
__global__ void pack_chunk_sums(ReducePack<F> p, double* partial) {
  const std::int64_t c = blockIdx.x;
  const int k = p.tensor_of_chunk(c);
  std::int64_t begin = 0, end = 0;
  p.chunk_range(k, c, begin, end);
  double a0 = 0.0, a1 = 0.0;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kBlock) p.f[k](i, a0, a1);
  block_sum(a0, a1);
  if (threadIdx.x == 0) {
    partial[2 * c] = a0;
    partial[2 * c + 1] = a1;
  }
}

// Block k folds tensor k's chunk sums, in a fixed order, into its output.
template <class F>
__global__ void pack_fold(ReducePack<F> p, const double* partial) {
  const int k = blockIdx.x;
  double a0 = 0.0, a1 = 0.0;
  for (std::int64_t c = p.first_chunk(k) + threadIdx.x; c < p.chunk_end[k]; c += kBlock) {
    a0 += partial[2 * c];
    a1 += partial[2 * c + 1];
  }
  block_sum(a0, a1);
  if (threadIdx.x == 0) {
    p.out[k][0] = a0;
    p.out[k][1] = a1;
  }
}

// Two launches per pack of tensors instead of one or two per tensor.
template <class F>
void reduce_all(std::span<const F> fs, std::span<const std::int64_t> ns, std::span<double* const> outs,
                const Stream& stream) {
  const cudaStream_t s = gppf::cuda::native(stream);
  for (const ReducePack<F>& p : make_reduce_packs(fs, ns, outs)) {
    auto* partial = static_cast<double*>(workspace(stream, static_cast<std::size_t>(2 * p.chunks()) * sizeof(double)));
    pack_chunk_sums<<<static_cast<unsigned>(p.chunks()), kBlock, 0, s>>>(p, partial);
    GPPF_CUDA_CHECK(cudaGetLastError());
    pack_fold<<<static_cast<unsigned>(p.count), kBlock, 0, s>>>(p, partial);
    GPPF_CUDA_CHECK(cudaGetLastError());
  }
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
void copy_tensors(std::span<const CopyFunctor> fs, std::span<const std::int64_t> ns, const Stream& stream) {
  apply(fs, ns, stream);
}

}  // namespace gppf::kernels::cuda
