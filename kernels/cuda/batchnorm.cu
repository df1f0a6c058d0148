// CUDA batch norm, NHWC, f32 or bf16 activations with f32 statistics. Reductions are two-level and
// deterministic: blocks of 32 channels x 8 row-threads sum a slice of rows each (coalesced along the
// channels), a per-channel kernel folds the slices in f64; the element-wise passes are the functors
// the host runs too, as 16-byte vectors with 32-bit indices where the layout allows.
#include <algorithm>

#include "kernels/batchnorm.hpp"
#include "kernels/cuda/bn_sums.cuh"
#include "kernels/cuda/context.hpp"
#include "kernels/functors/batchnorm.hpp"

namespace gppf::kernels::cuda {
namespace {

constexpr int kTileC = kBnTileC;
constexpr int kTileR = kBnTileR;

// Row slices per channel tile: enough blocks to fill an H100 several times, at most one per 8 rows.
int row_slices(std::int64_t rows, std::int64_t channels) {
  const std::int64_t tiles = (channels + kTileC - 1) / kTileC;
  const std::int64_t want = std::max<std::int64_t>(1, 132 * 8 / tiles);
  return static_cast<int>(
      std::clamp<std::int64_t>((rows + kTileR - 1) / kTileR, 1, std::min<std::int64_t>(want, 4096)));
}

// Forward (kBwd false): sums of x - x[row 0] and its square; backward: of g and g * (x - mean) (see
// bn_sums.cuh). Writes part_a/part_b[slice][channel].
template <class T, bool kBwd>
__global__ void partial_sums_kernel(const T* x, const T* y, const T* dy, const float* mean, std::int64_t rows,
                                    std::int64_t channels, bool relu, float* part_a, float* part_b) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kTileC + threadIdx.x;
  const float center = c >= channels ? 0.0f : kBwd ? mean[c] : normpool::load(x[c]);
  const std::int64_t at = blockIdx.y * channels + c;
  bn_tile_sums<T, kBwd>(x, y, dy, center, static_cast<std::int64_t>(blockIdx.y) * kTileR, rows,
                        static_cast<std::int64_t>(gridDim.y) * kTileR, channels, relu, part_a + at, part_b + at);
}

template <class T>
void launch_partial_sums(bool bwd, const T* x, const T* y, const T* dy, const float* mean, std::int64_t rows,
                         std::int64_t channels, bool relu, int slices, float* part_a, float* part_b, cudaStream_t st) {
  const dim3 grid(static_cast<unsigned>((channels + kTileC - 1) / kTileC), static_cast<unsigned>(slices));
  const dim3 block(kTileC, kTileR);
  if (bwd)
    partial_sums_kernel<T, true><<<grid, block, 0, st>>>(x, y, dy, mean, rows, channels, relu, part_a, part_b);
  else
    partial_sums_kernel<T, false><<<grid, block, 0, st>>>(x, y, dy, mean, rows, channels, relu, part_a, part_b);
  GPPF_CUDA_CHECK(cudaGetLastError());
}

struct FwdFinalize {
  const float* part_a;
  const float* part_b;
  int slices;
  std::int64_t rows, channels;
  float eps, momentum;
  const float* gamma;
  float* running_mean;
  float* running_var;
  float* save_mean;
  float* save_invstd;
  float* scale;
};

template <class T>
__global__ void finalize_fwd_kernel(FwdFinalize f, const T* x) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= f.channels) return;
  double s = 0.0, q = 0.0;
  for (int k = 0; k < f.slices; ++k) {
    s += f.part_a[k * f.channels + c];
    q += f.part_b[k * f.channels + c];
  }
  const double n = static_cast<double>(f.rows);
  const double mean_d = s / n;
  const double var = fmax(q / n - mean_d * mean_d, 0.0);
  const double mean = static_cast<double>(normpool::load(x[c])) + mean_d;
  const double invstd = 1.0 / sqrt(var + static_cast<double>(f.eps));
  const double m = f.momentum;
  f.save_mean[c] = static_cast<float>(mean);
  f.save_invstd[c] = static_cast<float>(invstd);
  f.scale[c] = static_cast<float>(f.gamma[c] * invstd);
  f.running_mean[c] = static_cast<float>((1.0 - m) * f.running_mean[c] + m * mean);
  f.running_var[c] = static_cast<float>((1.0 - m) * f.running_var[c] + m * var * n / (n - 1.0));
}

struct BwdFinalize {
  const float* part_a;
  const float* part_b;
  int slices;
  std::int64_t rows, channels;
  const float* gamma;
  const float* invstd;
  float* dgamma;
  float* dbeta;
  bool accumulate;
  float* ca;
  float* cb;
  float* ck;
};

__global__ void finalize_bwd_kernel(BwdFinalize f) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= f.channels) return;
  double sg = 0.0, sgx = 0.0;
  for (int k = 0; k < f.slices; ++k) {
    sg += f.part_a[k * f.channels + c];
    sgx += f.part_b[k * f.channels + c];
  }
  const double is = f.invstd[c], n = static_cast<double>(f.rows);
  const double dgamma = sgx * is;
  f.dgamma[c] = static_cast<float>(f.accumulate ? f.dgamma[c] + dgamma : dgamma);
  f.dbeta[c] = static_cast<float>(f.accumulate ? f.dbeta[c] + sg : sg);
  f.ca[c] = static_cast<float>(f.gamma[c] * is);
  f.cb[c] = static_cast<float>(sg / n);
  f.ck[c] = static_cast<float>(sgx * is * is / n);
}

__global__ void infer_scale_kernel(const float* gamma, const float* running_var, float eps, std::int64_t channels,
                                   float* scale) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < channels) scale[c] = static_cast<float>(gamma[c] / sqrt(static_cast<double>(running_var[c]) + eps));
}

// The element-wise passes' kernel: parallel_for_cuda's grid-stride loop with the index type of the
// pass (run_batchnorm_pass picks 16-byte vectors and 32-bit indices where they are valid).
template <class I, class F>
__global__ void batchnorm_pass_kernel(I n, F f) {
  for (I i = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; i < n; i += static_cast<I>(blockDim.x) * gridDim.x)
    f(i);
}

template <class F>
void launch_pass(std::int64_t n, const F& f, cudaStream_t st) {
  run_batchnorm_pass(n, f, [st]<class I, class P>(I count, const P& pass) {
    if (count == 0) return;
    constexpr int kBlock = 256;
    const std::int64_t blocks =
        std::min<std::int64_t>((static_cast<std::int64_t>(count) + kBlock - 1) / kBlock, 132 * 32);
    batchnorm_pass_kernel<I, P><<<static_cast<unsigned>(blocks), kBlock, 0, st>>>(count, pass);
    GPPF_CUDA_CHECK(cudaGetLastError());
  });
}

template <class T>
void launch_apply(bool relu, std::int64_t n, const T* x, T* y, const float* mean, const float* scale, const float* beta,
                  std::int64_t channels, cudaStream_t st) {
  if (relu)
    launch_pass(n, BatchNormApplyFunctor<T, true>{x, y, mean, scale, beta, channels}, st);
  else
    launch_pass(n, BatchNormApplyFunctor<T, false>{x, y, mean, scale, beta, channels}, st);
}

unsigned channel_blocks(std::int64_t channels) { return static_cast<unsigned>((channels + 255) / 256); }

template <class T>
void fwd_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
               Tensor& running_var, Tensor& y, Tensor& save_mean, Tensor& save_invstd, const Stream& s) {
  const std::int64_t channels = x.dim(-1), rows = x.numel() / channels;
  const int slices = row_slices(rows, channels);
  auto* ws = static_cast<float*>(workspace(s, sizeof(float) * static_cast<std::size_t>((2 * slices + 1) * channels)));
  float* part_a = ws;
  float* part_b = ws + slices * channels;
  float* scale = ws + 2 * slices * channels;
  const cudaStream_t st = gppf::cuda::native(s);
  const T* xs = static_cast<const T*>(x.data());
  launch_partial_sums<T>(false, xs, nullptr, nullptr, nullptr, rows, channels, false, slices, part_a, part_b, st);
  const FwdFinalize f{part_a,
                      part_b,
                      slices,
                      rows,
                      channels,
                      p.eps,
                      p.momentum,
                      gamma.data_as<float>(),
                      running_mean.data_as<float>(),
                      running_var.data_as<float>(),
                      save_mean.data_as<float>(),
                      save_invstd.data_as<float>(),
                      scale};
  finalize_fwd_kernel<T><<<channel_blocks(channels), 256, 0, st>>>(f, xs);
  GPPF_CUDA_CHECK(cudaGetLastError());
  launch_apply<T>(p.relu, x.numel(), xs, static_cast<T*>(y.data()), save_mean.data_as<float>(), scale,
                  beta.data_as<float>(), channels, st);
}

template <class T>
void fwd_infer(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
               const Tensor& running_mean, const Tensor& running_var, Tensor& y, const Stream& s) {
  const std::int64_t channels = x.dim(-1);
  auto* scale = static_cast<float*>(workspace(s, sizeof(float) * static_cast<std::size_t>(channels)));
  const cudaStream_t st = gppf::cuda::native(s);
  infer_scale_kernel<<<channel_blocks(channels), 256, 0, st>>>(gamma.data_as<float>(), running_var.data_as<float>(),
                                                               p.eps, channels, scale);
  GPPF_CUDA_CHECK(cudaGetLastError());
  launch_apply<T>(p.relu, x.numel(), static_cast<const T*>(x.data()), static_cast<T*>(y.data()),
                  running_mean.data_as<float>(), scale, beta.data_as<float>(), channels, st);
}

template <class T>
void bwd(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
         const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
         GradMode param_mode, const Stream& s) {
  const std::int64_t channels = x.dim(-1), rows = x.numel() / channels;
  const int slices = row_slices(rows, channels);
  auto* ws = static_cast<float*>(workspace(s, sizeof(float) * static_cast<std::size_t>((2 * slices + 3) * channels)));
  float* part_a = ws;
  float* part_b = ws + slices * channels;
  float* ca = ws + 2 * slices * channels;
  float* cb = ca + channels;
  float* ck = cb + channels;
  const cudaStream_t st = gppf::cuda::native(s);
  const T* xs = static_cast<const T*>(x.data());
  const T* ys = p.relu ? static_cast<const T*>(y.data()) : nullptr;
  const T* dys = static_cast<const T*>(dy.data());
  const float* mean = save_mean.data_as<float>();
  launch_partial_sums<T>(true, xs, ys, dys, mean, rows, channels, p.relu, slices, part_a, part_b, st);
  const BwdFinalize f{part_a,
                      part_b,
                      slices,
                      rows,
                      channels,
                      gamma.data_as<float>(),
                      save_invstd.data_as<float>(),
                      dgamma.data_as<float>(),
                      dbeta.data_as<float>(),
                      param_mode == GradMode::Accumulate,
                      ca,
                      cb,
                      ck};
  finalize_bwd_kernel<<<channel_blocks(channels), 256, 0, st>>>(f);
  GPPF_CUDA_CHECK(cudaGetLastError());
  T* dxs = static_cast<T*>(dx.data());
  if (p.relu)
    launch_pass(x.numel(), BatchNormBwdDataFunctor<T, true>{xs, ys, dys, dxs, mean, ca, cb, ck, channels}, st);
  else
    launch_pass(x.numel(), BatchNormBwdDataFunctor<T, false>{xs, ys, dys, dxs, mean, ca, cb, ck, channels}, st);
}

// Synchronised BN's local sums in double: blocks of kTileC channels x kTileR row-threads sum slices of
// the rows, then one thread per value folds the slices in order (deterministic).
template <class T, bool kBwd>
__global__ void channel_sums_kernel(const T* x, const T* y, const T* dy, const float* mean, const float* invstd,
                                    std::int64_t rows, std::int64_t channels, bool relu, double* part) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kTileC + threadIdx.x;
  double a = 0.0, b = 0.0;
  if (c < channels)
    for (std::int64_t r = static_cast<std::int64_t>(blockIdx.y) * kTileR + threadIdx.y; r < rows;
         r += static_cast<std::int64_t>(gridDim.y) * kTileR) {
      const std::int64_t i = r * channels + c;
      const double v = normpool::load(x[i]);
      if constexpr (kBwd) {
        double g = normpool::load(dy[i]);
        if (relu && !(normpool::load(y[i]) > 0.0f)) g = 0.0;
        a += g;
        b += g * (v - mean[c]) * invstd[c];
      } else {
        a += v;
        b += v * v;
      }
    }
  __shared__ double sa[kTileR][kTileC + 1], sb[kTileR][kTileC + 1];
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && c < channels) {
    for (int k = 1; k < kTileR; ++k) {
      a += sa[k][threadIdx.x];
      b += sb[k][threadIdx.x];
    }
    part[blockIdx.y * 2 * channels + c] = a;
    part[blockIdx.y * 2 * channels + channels + c] = b;
  }
}

__global__ void fold_slices_kernel(const double* part, int slices, std::int64_t n, double* out) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  double s = 0.0;
  for (int k = 0; k < slices; ++k) s += part[k * n + i];
  out[i] = s;
}

}  // namespace

std::vector<double> batchnorm_channel_sums(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy,
                                           const Tensor& mean, const Tensor& invstd, const Stream& s) {
  const std::int64_t channels = x.dim(-1), rows = x.numel() / channels;
  const int slices = row_slices(rows, channels);
  auto* part = static_cast<double*>(workspace(s, sizeof(double) * static_cast<std::size_t>(2 * slices * channels)));
  // The folded sums land in a device tensor (doubles as pairs of floats) that read_back brings home.
  Tensor out = Tensor::empty({4 * channels}, DType::F32, x.device());
  const cudaStream_t st = gppf::cuda::native(s);
  const dim3 grid(static_cast<unsigned>((channels + kTileC - 1) / kTileC), static_cast<unsigned>(slices));
  const dim3 block(kTileC, kTileR);
  const bool bwd = dy.defined();
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    const T* xs = static_cast<const T*>(x.data());
    const T* ys = bwd && relu ? static_cast<const T*>(y.data()) : nullptr;
    if (bwd)
      channel_sums_kernel<T, true><<<grid, block, 0, st>>>(xs, ys, static_cast<const T*>(dy.data()),
                                                           mean.data_as<float>(), invstd.data_as<float>(), rows,
                                                           channels, relu, part);
    else
      channel_sums_kernel<T, false>
          <<<grid, block, 0, st>>>(xs, nullptr, nullptr, nullptr, nullptr, rows, channels, false, part);
  };
  if (x.dtype() == DType::BF16)
    launch(bf16{});
  else
    launch(0.0f);
  GPPF_CUDA_CHECK(cudaGetLastError());
  const std::int64_t n = 2 * channels;
  fold_slices_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, st>>>(part, slices, n,
                                                                             static_cast<double*>(out.data()));
  GPPF_CUDA_CHECK(cudaGetLastError());
  const Tensor host = read_back(out, s);
  const auto* d = static_cast<const double*>(host.data());
  return std::vector<double>(d, d + n);
}

void batchnorm_bwd_data(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& mean,
                        const Tensor& a, const Tensor& b, const Tensor& k, Tensor& dx, const Stream& s) {
  const cudaStream_t st = gppf::cuda::native(s);
  const std::int64_t channels = x.dim(-1);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* xs = static_cast<const T*>(x.data());
    const T* ys = relu ? static_cast<const T*>(y.data()) : nullptr;
    const T* dys = static_cast<const T*>(dy.data());
    T* dxs = static_cast<T*>(dx.data());
    const float *mu = mean.data_as<float>(), *ca = a.data_as<float>(), *cb = b.data_as<float>(),
                *ck = k.data_as<float>();
    if (relu)
      launch_pass(x.numel(), BatchNormBwdDataFunctor<T, true>{xs, ys, dys, dxs, mu, ca, cb, ck, channels}, st);
    else
      launch_pass(x.numel(), BatchNormBwdDataFunctor<T, false>{xs, ys, dys, dxs, mu, ca, cb, ck, channels}, st);
  };
  if (x.dtype() == DType::BF16)
    run(bf16{});
  else
    run(0.0f);
}

void batchnorm_fwd_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                         const Stream& s) {
  if (x.dtype() == DType::BF16)
    fwd_train<bf16>(p, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd, s);
  else
    fwd_train<float>(p, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd, s);
}

void batchnorm_fwd_infer(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& running_mean, const Tensor& running_var, Tensor& y, const Stream& s) {
  if (x.dtype() == DType::BF16)
    fwd_infer<bf16>(p, x, gamma, beta, running_mean, running_var, y, s);
  else
    fwd_infer<float>(p, x, gamma, beta, running_mean, running_var, y, s);
}

void batchnorm_bwd(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                   const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                   GradMode param_mode, const Stream& s) {
  if (x.dtype() == DType::BF16)
    bwd<bf16>(p, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode, s);
  else
    bwd<float>(p, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode, s);
}

}  // namespace gppf::kernels::cuda
