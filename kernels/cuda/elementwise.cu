#include <algorithm>

#include "kernels/cuda/context.hpp"
#include "kernels/cuda/parallel_for.cuh"
#include "kernels/elementwise.hpp"
#include "kernels/functors/elementwise.hpp"

namespace gppf::kernels::cuda {
namespace detail {

constexpr int kReduceThreads = 256;

// Sums the kReduceThreads values of `sh` in a fixed tree order; the result lands in sh[0].
__device__ void block_tree_sum(double* sh) {
  __syncthreads();
  for (int w = kReduceThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
}

// Block b sums chunk b (kDotChunk elements) of a * b: the same chunks as the host, so the order of
// the additions depends on n only.
template <class T>
__global__ void dot_partial_kernel(const T* a, const T* b, std::int64_t n, double* partial) {
  __shared__ double sh[kReduceThreads];
  const std::int64_t lo = static_cast<std::int64_t>(blockIdx.x) * kDotChunk;
  const std::int64_t hi = lo + kDotChunk < n ? lo + kDotChunk : n;
  double s = 0.0;
  for (std::int64_t i = lo + threadIdx.x; i < hi; i += kReduceThreads)
    s += static_cast<double>(to_f32(a[i])) * static_cast<double>(to_f32(b[i]));
  sh[threadIdx.x] = s;
  block_tree_sum(sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

__global__ void dot_final_kernel(const double* partial, std::int64_t chunks, float* out, bool accumulate) {
  __shared__ double sh[kReduceThreads];
  double s = 0.0;
  for (std::int64_t i = threadIdx.x; i < chunks; i += kReduceThreads) s += partial[i];
  sh[threadIdx.x] = s;
  block_tree_sum(sh);
  if (threadIdx.x == 0) out[0] = static_cast<float>(accumulate ? out[0] + sh[0] : sh[0]);
}

constexpr int kColTile = 32, kRowThreads = 8;

// grid (column tiles, row blocks); block (kColTile, kRowThreads). partial[b, c] = sum of rows of block b.
template <class T>
__global__ void reduce_rows_partial_kernel(const T* x, std::int64_t rows, std::int64_t cols, std::int64_t block_rows,
                                           double* partial) {
  __shared__ double sh[kRowThreads][kColTile + 1];
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kColTile + threadIdx.x;
  const std::int64_t lo = static_cast<std::int64_t>(blockIdx.y) * block_rows;
  const std::int64_t hi = lo + block_rows < rows ? lo + block_rows : rows;
  double s = 0.0;
  if (c < cols)
    for (std::int64_t r = lo + threadIdx.y; r < hi; r += kRowThreads) s += to_f32(x[r * cols + c]);
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    double t = 0.0;
    for (int k = 0; k < kRowThreads; ++k) t += sh[k][threadIdx.x];
    partial[blockIdx.y * cols + c] = t;
  }
}

template <class T>
struct ReduceRowsFinalFunctor {
  const double* partial;
  std::int64_t blocks, cols;
  T* y;
  bool accumulate;
  GPPF_HD void operator()(std::int64_t c) const {
    double t = 0.0;
    for (std::int64_t b = 0; b < blocks; ++b) t += partial[b * cols + c];
    y[c] = from_f32<T>(accumulate ? static_cast<float>(to_f32(y[c]) + t) : static_cast<float>(t));
  }
};

}  // namespace detail

void relu_fwd(const Tensor& x, Tensor& y, const Stream& s) {
  dispatch_float("relu_fwd", x, [&](auto tag) {
    using T = decltype(tag);
    parallel_for_cuda(x.numel(), ReluFwdFunctor<T>{data_ptr<T>(x), data_ptr<T>(y)}, gppf::cuda::native(s));
  });
}

void relu_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate, const Stream& s) {
  dispatch_float("relu_bwd", y, [&](auto tag) {
    using T = decltype(tag);
    if (accumulate)
      parallel_for_cuda(y.numel(), ReluBwdFunctor<T, true>{data_ptr<T>(y), data_ptr<T>(dy), data_ptr<T>(dx)},
                        gppf::cuda::native(s));
    else
      parallel_for_cuda(y.numel(), ReluBwdFunctor<T, false>{data_ptr<T>(y), data_ptr<T>(dy), data_ptr<T>(dx)},
                        gppf::cuda::native(s));
  });
}

void add(const Tensor& a, const Tensor& b, Tensor& y, bool relu, const Stream& s) {
  dispatch_float("add", a, [&](auto tag) {
    using T = decltype(tag);
    if (relu)
      parallel_for_cuda(a.numel(), AddFunctor<T, true>{data_ptr<T>(a), data_ptr<T>(b), data_ptr<T>(y)},
                        gppf::cuda::native(s));
    else
      parallel_for_cuda(a.numel(), AddFunctor<T, false>{data_ptr<T>(a), data_ptr<T>(b), data_ptr<T>(y)},
                        gppf::cuda::native(s));
  });
}

namespace {
template <class Alpha>
void axpby_any(Alpha alpha, const Tensor& x, float beta, Tensor& y, const Stream& s) {
  dispatch_float("axpby", x, [&](auto xtag) {
    using TX = decltype(xtag);
    dispatch_float("axpby", y, [&](auto ytag) {
      using TY = decltype(ytag);
      if (beta == 0.0f)
        parallel_for_cuda(x.numel(), AxpbyFunctor<TX, TY, Alpha, false>{alpha, data_ptr<TX>(x), beta, data_ptr<TY>(y)},
                          gppf::cuda::native(s));
      else
        parallel_for_cuda(x.numel(), AxpbyFunctor<TX, TY, Alpha, true>{alpha, data_ptr<TX>(x), beta, data_ptr<TY>(y)},
                          gppf::cuda::native(s));
    });
  });
}
}  // namespace

void axpby(float alpha, const Tensor& x, float beta, Tensor& y, const Stream& s) {
  axpby_any(AlphaValue{alpha}, x, beta, y, s);
}

void axpby_scalar(const Tensor& alpha, const Tensor& x, float beta, Tensor& y, const Stream& s) {
  axpby_any(AlphaPointer{data_ptr<const float>(alpha)}, x, beta, y, s);
}

void fill(Tensor& y, float value, const Stream& s) {
  dispatch_float("fill", y, [&](auto tag) {
    using T = decltype(tag);
    parallel_for_cuda(y.numel(), FillFunctor<T>{data_ptr<T>(y), from_f32<T>(value)}, gppf::cuda::native(s));
  });
}

void dot(const Tensor& a, const Tensor& b, Tensor& out, bool accumulate, const Stream& s) {
  const std::int64_t n = a.numel();
  const std::int64_t chunks = (n + kDotChunk - 1) / kDotChunk;
  auto* partial = static_cast<double*>(workspace(s, static_cast<std::size_t>(std::max<std::int64_t>(chunks, 1)) * 8));
  const cudaStream_t st = gppf::cuda::native(s);
  dispatch_float("dot", a, [&](auto tag) {
    using T = decltype(tag);
    if (chunks > 0)
      detail::dot_partial_kernel<T><<<static_cast<unsigned>(chunks), detail::kReduceThreads, 0, st>>>(
          data_ptr<T>(a), data_ptr<T>(b), n, partial);
  });
  GPPF_CUDA_CHECK(cudaGetLastError());
  detail::dot_final_kernel<<<1, detail::kReduceThreads, 0, st>>>(partial, chunks, data_ptr<float>(out), accumulate);
  GPPF_CUDA_CHECK(cudaGetLastError());
}

void reduce_rows(const Tensor& x, Tensor& y, bool accumulate, const Stream& s) {
  const std::int64_t cols = x.dim(-1);
  const std::int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  if (cols == 0) return;
  // At least 256 rows per block, and few enough blocks for gridDim.y (65535).
  const std::int64_t block_rows = std::max<std::int64_t>(256, (rows + 65534) / 65535);
  const std::int64_t blocks = (rows + block_rows - 1) / block_rows;
  const cudaStream_t st = gppf::cuda::native(s);
  auto* partial =
      static_cast<double*>(workspace(s, static_cast<std::size_t>(std::max<std::int64_t>(blocks, 1) * cols) * 8));
  dispatch_float("reduce_rows", x, [&](auto tag) {
    using T = decltype(tag);
    if (blocks == 0) return;
    const dim3 grid(static_cast<unsigned>((cols + detail::kColTile - 1) / detail::kColTile),
                    static_cast<unsigned>(blocks));
    const dim3 block(detail::kColTile, detail::kRowThreads);
    detail::reduce_rows_partial_kernel<T><<<grid, block, 0, st>>>(data_ptr<T>(x), rows, cols, block_rows, partial);
    GPPF_CUDA_CHECK(cudaGetLastError());
  });
  dispatch_float("reduce_rows", y, [&](auto tag) {
    using T = decltype(tag);
    parallel_for_cuda(cols, detail::ReduceRowsFinalFunctor<T>{partial, blocks, cols, data_ptr<T>(y), accumulate}, st);
  });
}

void broadcast_rows(const Tensor& v, Tensor& y, const Stream& s) {
  dispatch_float("broadcast_rows", v, [&](auto vtag) {
    using TV = decltype(vtag);
    dispatch_float("broadcast_rows", y, [&](auto ytag) {
      using TY = decltype(ytag);
      const BroadcastRowsFunctor<TV, TY> f{data_ptr<TV>(v), data_ptr<TY>(y), v.numel()};
      parallel_for_cuda(y.numel(), f, gppf::cuda::native(s));
    });
  });
}

}  // namespace gppf::kernels::cuda
