// CUDA pooling, NHWC, f32 or bf16: one thread per output in forward, one per input in backward (a
// gather over the windows that contain it: deterministic, no atomics). Global average pooling sums
// with blocks of 32 channels x 8 pixel-threads per image.
#include "kernels/cuda/parallel_for.cuh"
#include "kernels/functors/pool.hpp"
#include "kernels/pool.hpp"

namespace gppf::kernels::cuda {
namespace {

constexpr int kTileC = 32;
constexpr int kTileP = 8;

template <class T>
__global__ void global_avgpool_kernel(const T* x, T* y, std::int64_t hw, std::int64_t channels, float scale) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kTileC + threadIdx.x;
  const std::int64_t n = blockIdx.y;
  float sum = 0.0f;
  if (c < channels)
    for (std::int64_t q = threadIdx.y; q < hw; q += kTileP) sum += normpool::load(x[(n * hw + q) * channels + c]);
  __shared__ float part[kTileP][kTileC + 1];
  part[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < channels) {
    for (int k = 1; k < kTileP; ++k) sum += part[k][threadIdx.x];
    y[n * channels + c] = normpool::store<T>(sum * scale);
  }
}

template <class T>
void pool_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y, bool avg, const Stream& s) {
  const Pool2dFwdFunctor<T> f{pool_geom(p, x.shape()), static_cast<const T*>(x.data()), static_cast<T*>(y.data()), avg};
  parallel_for_cuda(y.numel(), f, gppf::cuda::native(s));
}

template <class T>
void pool_bwd(const Pool2dParams& p, const Tensor* x, const Tensor& dy, Tensor& dx, bool avg, const Stream& s) {
  const Pool2dBwdFunctor<T> f{pool_geom(p, dx.shape()), x ? static_cast<const T*>(x->data()) : nullptr,
                              static_cast<const T*>(dy.data()), static_cast<T*>(dx.data()), avg};
  parallel_for_cuda(dx.numel(), f, gppf::cuda::native(s));
}

template <class T>
void gap_fwd(const Tensor& x, Tensor& y, const Stream& s) {
  const std::int64_t n = x.dim(0), hw = x.dim(1) * x.dim(2), c = x.dim(3);
  GPPF_CHECK(n <= 65535, "global_avgpool_fwd on CUDA: batch ", n, " exceeds 65535; split the batch");
  const dim3 grid(static_cast<unsigned>((c + kTileC - 1) / kTileC), static_cast<unsigned>(n));
  global_avgpool_kernel<T><<<grid, dim3(kTileC, kTileP), 0, gppf::cuda::native(s)>>>(
      static_cast<const T*>(x.data()), static_cast<T*>(y.data()), hw, c, 1.0f / static_cast<float>(hw));
  GPPF_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void gap_bwd(const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s) {
  const std::int64_t hw = dx.dim(1) * dx.dim(2), c = dx.dim(3);
  const GlobalAvgPoolBwdFunctor<T> f{static_cast<const T*>(dy.data()), static_cast<T*>(dx.data()),  hw, c,
                                     1.0f / static_cast<float>(hw),    mode == GradMode::Accumulate};
  parallel_for_cuda(dx.numel(), f, gppf::cuda::native(s));
}

}  // namespace

void maxpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y, const Stream& s) {
  if (x.dtype() == DType::BF16)
    pool_fwd<bf16>(p, x, y, false, s);
  else
    pool_fwd<float>(p, x, y, false, s);
}

void maxpool2d_bwd(const Pool2dParams& p, const Tensor& x, const Tensor&, const Tensor& dy, Tensor& dx,
                   const Stream& s) {
  if (x.dtype() == DType::BF16)
    pool_bwd<bf16>(p, &x, dy, dx, false, s);
  else
    pool_bwd<float>(p, &x, dy, dx, false, s);
}

void avgpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y, const Stream& s) {
  if (x.dtype() == DType::BF16)
    pool_fwd<bf16>(p, x, y, true, s);
  else
    pool_fwd<float>(p, x, y, true, s);
}

void avgpool2d_bwd(const Pool2dParams& p, const Tensor& dy, Tensor& dx, const Stream& s) {
  if (dx.dtype() == DType::BF16)
    pool_bwd<bf16>(p, nullptr, dy, dx, true, s);
  else
    pool_bwd<float>(p, nullptr, dy, dx, true, s);
}

void global_avgpool_fwd(const Tensor& x, Tensor& y, const Stream& s) {
  if (x.dtype() == DType::BF16)
    gap_fwd<bf16>(x, y, s);
  else
    gap_fwd<float>(x, y, s);
}

void global_avgpool_bwd(const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s) {
  if (dx.dtype() == DType::BF16)
    gap_bwd<bf16>(dy, dx, mode, s);
  else
    gap_bwd<float>(dy, dx, mode, s);
}

}  // namespace gppf::kernels::cuda
