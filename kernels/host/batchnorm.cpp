// Host batch norm: two passes over the data in training (per-channel sums, then the affine map), two
// in backward (per-channel sums of g and g * (x - mean), then dx). Rows are split across OpenMP
// threads; each thread sums blocks of rows in f32 (vectorised along the row) and folds every block
// into f64 partials, so long reductions stay exact to f32 rounding.
#include "kernels/batchnorm.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/functors/batchnorm.hpp"

namespace gppf::kernels::host {
namespace {

constexpr std::int64_t kRowBlock = 64;

int threads_for(std::int64_t elements) { return elements >= kParallelThreshold ? omp_get_max_threads() : 1; }

// The data are walked as rows of `width` elements, a multiple of the channel count: with 4 or 8
// channels a loop over one pixel's channels is too short to vectorise (4-channel batch norm ran at a
// quarter of the 32-channel rate per byte), so narrow tensors take several pixels per row and every
// per-channel coefficient is tiled to the row width.
std::int64_t row_width(std::int64_t channels) {
  if (channels >= 64) return channels;
  const std::int64_t w = std::lcm(channels, std::int64_t{64});
  return w <= 512 ? w : channels;
}

std::vector<float> tiled(const float* per_channel, std::int64_t channels, std::int64_t width) {
  std::vector<float> t(static_cast<std::size_t>(width));
  for (std::int64_t j = 0; j < width; ++j) t[static_cast<std::size_t>(j)] = per_channel[j % channels];
  return t;
}

// Sums two per-channel quantities over all elements: row(base, len, a, b) adds elements
// [base, base + len) into the f32 partials a, b (indexed by position in the row, len <= width).
// Returns the f64 totals per channel in sum_a, sum_b.
template <class RowFn>
void reduce_rows(std::int64_t numel, std::int64_t channels, std::int64_t width, const RowFn& row,
                 std::vector<double>& sum_a, std::vector<double>& sum_b) {
  const auto nw = static_cast<std::size_t>(width);
  const std::int64_t rows = (numel + width - 1) / width;
  const int nt = threads_for(numel);
  std::vector<double> parts(static_cast<std::size_t>(nt) * 2 * nw, 0.0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), nthr = omp_get_num_threads();
    const std::int64_t r0 = rows * t / nthr, r1 = rows * (t + 1) / nthr;
    std::vector<float> a(nw), b(nw);
    double* da = parts.data() + static_cast<std::size_t>(t) * 2 * nw;
    double* db = da + nw;
    for (std::int64_t start = r0; start < r1; start += kRowBlock) {
      std::fill(a.begin(), a.end(), 0.0f);
      std::fill(b.begin(), b.end(), 0.0f);
      const std::int64_t end = std::min(start + kRowBlock, r1);
      for (std::int64_t r = start; r < end; ++r) row(r * width, std::min(width, numel - r * width), a.data(), b.data());
      for (std::size_t j = 0; j < nw; ++j) {
        da[j] += a[j];
        db[j] += b[j];
      }
    }
  }
  sum_a.assign(static_cast<std::size_t>(channels), 0.0);
  sum_b.assign(static_cast<std::size_t>(channels), 0.0);
  for (int t = 0; t < nt; ++t)
    for (std::size_t j = 0; j < nw; ++j) {
      const std::size_t c = j % static_cast<std::size_t>(channels);
      sum_a[c] += parts[static_cast<std::size_t>(t) * 2 * nw + j];
      sum_b[c] += parts[static_cast<std::size_t>(t) * 2 * nw + nw + j];
    }
}

// Runs f.at(i, j) over every element i, j = i's position in its row (coefficients tiled to width).
// Not run_batchnorm_pass, the CUDA form: its 16-byte chunks with a modulo each measured no faster
// here for f32, about 2x slower for bf16 and 2-18x at narrow C (docs/PERFORMANCE.md).
template <class F>
void for_each_row(std::int64_t numel, std::int64_t width, const F& f) {
  const std::int64_t rows = (numel + width - 1) / width;
  const int nt = threads_for(numel);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t base = r * width, len = std::min(width, numel - base);
    for (std::int64_t j = 0; j < len; ++j) f.at(base + j, j);
  }
}

// Batch statistics of x: save_mean/save_invstd written, running statistics updated.
template <class T>
void train_stats(const BatchNormParams& p, const Tensor& x, Tensor& running_mean, Tensor& running_var,
                 Tensor& save_mean, Tensor& save_invstd) {
  const std::int64_t channels = x.dim(-1), numel = x.numel(), rows = numel / channels, width = row_width(channels);
  const auto nc = static_cast<std::size_t>(channels);
  const T* xs = static_cast<const T*>(x.data());
  // Shifting by the first pixel keeps the one-pass variance free of cancellation when |mean| >> std.
  std::vector<float> shift(nc);
  for (std::size_t c = 0; c < nc; ++c) shift[c] = normpool::load(xs[c]);
  const std::vector<float> shift_w = tiled(shift.data(), channels, width);
  std::vector<double> sum, sumsq;
  reduce_rows(
      numel, channels, width,
      [&](std::int64_t base, std::int64_t len, float* a, float* b) {
        const T* xr = xs + base;
        const float* sh = shift_w.data();
        for (std::int64_t j = 0; j < len; ++j) {
          const float d = normpool::load(xr[j]) - sh[j];
          a[j] += d;
          b[j] += d * d;
        }
      },
      sum, sumsq);
  float* rm = running_mean.data_as<float>();
  float* rv = running_var.data_as<float>();
  float* sm = save_mean.data_as<float>();
  float* si = save_invstd.data_as<float>();
  const double m = p.momentum, n = static_cast<double>(rows);
  for (std::size_t c = 0; c < nc; ++c) {
    const double mean_d = sum[c] / n;
    const double var = std::max(sumsq[c] / n - mean_d * mean_d, 0.0);
    const double mean = shift[c] + mean_d;
    sm[c] = static_cast<float>(mean);
    si[c] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(p.eps)));
    rm[c] = static_cast<float>((1.0 - m) * rm[c] + m * mean);
    rv[c] = static_cast<float>((1.0 - m) * rv[c] + m * var * n / (n - 1.0));
  }
}

// y = (x - mean) * scale + beta per channel (then the ReLU), the coefficients tiled to the row width.
template <class T, bool kRelu>
void apply(const Tensor& x, Tensor& y, const float* mean, const float* scale, const float* beta) {
  const std::int64_t channels = x.dim(-1), width = row_width(channels);
  const std::vector<float> mean_w = tiled(mean, channels, width), scale_w = tiled(scale, channels, width),
                           beta_w = tiled(beta, channels, width);
  const BatchNormApplyFunctor<T, kRelu> f{
      static_cast<const T*>(x.data()), static_cast<T*>(y.data()), mean_w.data(), scale_w.data(), beta_w.data(), width};
  for_each_row(x.numel(), width, f);
}

template <class T, bool kRelu>
void fwd_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
               Tensor& running_var, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  train_stats<T>(p, x, running_mean, running_var, save_mean, save_invstd);
  const auto nc = static_cast<std::size_t>(x.dim(-1));
  const float* g = gamma.data_as<float>();
  const float* si = save_invstd.data_as<float>();
  std::vector<float> scale(nc);
  for (std::size_t c = 0; c < nc; ++c) scale[c] = g[c] * si[c];
  apply<T, kRelu>(x, y, save_mean.data_as<float>(), scale.data(), beta.data_as<float>());
}

template <class T, bool kRelu>
void fwd_infer(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
               const Tensor& running_mean, const Tensor& running_var, Tensor& y) {
  const auto nc = static_cast<std::size_t>(x.dim(-1));
  const float* g = gamma.data_as<float>();
  const float* rv = running_var.data_as<float>();
  std::vector<float> scale(nc);
  for (std::size_t c = 0; c < nc; ++c)
    scale[c] = static_cast<float>(g[c] / std::sqrt(static_cast<double>(rv[c]) + static_cast<double>(p.eps)));
  apply<T, kRelu>(x, y, running_mean.data_as<float>(), scale.data(), beta.data_as<float>());
}

template <class T, bool kRelu>
void bwd(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
         const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode) {
  const std::int64_t channels = x.dim(-1), numel = x.numel(), rows = numel / channels, width = row_width(channels);
  const auto nc = static_cast<std::size_t>(channels);
  const T* xs = static_cast<const T*>(x.data());
  const T* ys = kRelu ? static_cast<const T*>(y.data()) : nullptr;
  const T* dys = static_cast<const T*>(dy.data());
  const float* mean = save_mean.data_as<float>();
  const float* invstd = save_invstd.data_as<float>();
  const std::vector<float> mean_w = tiled(mean, channels, width);
  std::vector<double> sg, sgx;
  reduce_rows(
      numel, channels, width,
      [&](std::int64_t base, std::int64_t len, float* a, float* b) {
        const float* mw = mean_w.data();
        for (std::int64_t j = 0; j < len; ++j) {
          float gv = normpool::load(dys[base + j]);
          if constexpr (kRelu) gv = normpool::load(ys[base + j]) > 0.0f ? gv : 0.0f;
          a[j] += gv;
          b[j] += gv * (normpool::load(xs[base + j]) - mw[j]);
        }
      },
      sg, sgx);
  const float* gm = gamma.data_as<float>();
  float* dg = dgamma.data_as<float>();
  float* db = dbeta.data_as<float>();
  const bool acc = param_mode == GradMode::Accumulate;
  std::vector<float> ca(nc), cb(nc), ck(nc);
  const double n = static_cast<double>(rows);
  for (std::size_t c = 0; c < nc; ++c) {
    const double is = invstd[c];
    const double dgamma_c = sgx[c] * is;
    dg[c] = static_cast<float>(acc ? dg[c] + dgamma_c : dgamma_c);
    db[c] = static_cast<float>(acc ? db[c] + sg[c] : sg[c]);
    ca[c] = static_cast<float>(gm[c] * is);
    cb[c] = static_cast<float>(sg[c] / n);
    ck[c] = static_cast<float>(sgx[c] * is * is / n);
  }
  const std::vector<float> a_w = tiled(ca.data(), channels, width), b_w = tiled(cb.data(), channels, width),
                           k_w = tiled(ck.data(), channels, width);
  const BatchNormBwdDataFunctor<T, kRelu> f{
      xs, ys, dys, static_cast<T*>(dx.data()), mean_w.data(), a_w.data(), b_w.data(), k_w.data(), width};
  for_each_row(numel, width, f);
}

// Synchronised BN's local sums in double, over fixed blocks of rows added in block order: the same
// bits whatever the thread count.
template <class T, bool kBwd, bool kRelu>
std::vector<double> channel_sums(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& mean,
                                 const Tensor& invstd) {
  constexpr std::int64_t kBlockRows = 1024;
  const std::int64_t channels = x.dim(-1), rows = x.numel() / channels;
  const auto nc = static_cast<std::size_t>(channels);
  const std::int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  std::vector<double> parts(static_cast<std::size_t>(blocks) * 2 * nc, 0.0);
  const T* xs = static_cast<const T*>(x.data());
  const T* ys = kRelu ? static_cast<const T*>(y.data()) : nullptr;
  const T* dys = kBwd ? static_cast<const T*>(dy.data()) : nullptr;
  const float* mu = kBwd ? mean.data_as<float>() : nullptr;
  const float* is = kBwd ? invstd.data_as<float>() : nullptr;
#pragma omp parallel for schedule(static) if (blocks > 1 && x.numel() >= kParallelThreshold)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    double* a = parts.data() + static_cast<std::size_t>(blk) * 2 * nc;
    double* b = a + nc;
    for (std::int64_t r = blk * kBlockRows; r < std::min(rows, (blk + 1) * kBlockRows); ++r)
      for (std::int64_t c = 0; c < channels; ++c) {
        const std::int64_t i = r * channels + c;
        const double v = normpool::load(xs[i]);
        const auto cc = static_cast<std::size_t>(c);
        if constexpr (kBwd) {
          double g = normpool::load(dys[i]);
          if constexpr (kRelu) g = normpool::load(ys[i]) > 0.0f ? g : 0.0;
          a[cc] += g;
          b[cc] += g * (v - mu[c]) * is[c];
        } else {
          a[cc] += v;
          b[cc] += v * v;
        }
      }
  }
  std::vector<double> out(2 * nc, 0.0);
  for (std::int64_t blk = 0; blk < blocks; ++blk)
    for (std::size_t i = 0; i < 2 * nc; ++i) out[i] += parts[static_cast<std::size_t>(blk) * 2 * nc + i];
  return out;
}

template <class T, bool kRelu>
void bwd_data(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& mean, const Tensor& a, const Tensor& b,
              const Tensor& k, Tensor& dx) {
  const std::int64_t channels = x.dim(-1), width = row_width(channels);
  const std::vector<float> mean_w = tiled(mean.data_as<float>(), channels, width),
                           a_w = tiled(a.data_as<float>(), channels, width),
                           b_w = tiled(b.data_as<float>(), channels, width),
                           k_w = tiled(k.data_as<float>(), channels, width);
  const BatchNormBwdDataFunctor<T, kRelu> f{static_cast<const T*>(x.data()),
                                            kRelu ? static_cast<const T*>(y.data()) : nullptr,
                                            static_cast<const T*>(dy.data()),
                                            static_cast<T*>(dx.data()),
                                            mean_w.data(),
                                            a_w.data(),
                                            b_w.data(),
                                            k_w.data(),
                                            width};
  for_each_row(x.numel(), width, f);
}

// Calls f.operator()<T, kRelu>() for the activation dtype and the ReLU flag.
template <class F>
void dispatch(DType dtype, bool relu, const F& f) {
  if (dtype == DType::BF16) {
    if (relu)
      f.template operator()<bf16, true>();
    else
      f.template operator()<bf16, false>();
  } else {
    if (relu)
      f.template operator()<float, true>();
    else
      f.template operator()<float, false>();
  }
}

}  // namespace

void batchnorm_fwd_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  dispatch(x.dtype(), p.relu, [&]<class T, bool kRelu>() {
    fwd_train<T, kRelu>(p, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd);
  });
}

void batchnorm_stats(const BatchNormParams& p, const Tensor& x, Tensor& running_mean, Tensor& running_var,
                     Tensor& save_mean, Tensor& save_invstd) {
  if (x.dtype() == DType::BF16)
    train_stats<bf16>(p, x, running_mean, running_var, save_mean, save_invstd);
  else
    train_stats<float>(p, x, running_mean, running_var, save_mean, save_invstd);
}

void batchnorm_fwd_infer(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& running_mean, const Tensor& running_var, Tensor& y) {
  dispatch(x.dtype(), p.relu,
           [&]<class T, bool kRelu>() { fwd_infer<T, kRelu>(p, x, gamma, beta, running_mean, running_var, y); });
}

void batchnorm_bwd(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                   const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                   GradMode param_mode) {
  dispatch(x.dtype(), p.relu, [&]<class T, bool kRelu>() {
    bwd<T, kRelu>(x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode);
  });
}

std::vector<double> batchnorm_channel_sums(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy,
                                           const Tensor& mean, const Tensor& invstd) {
  std::vector<double> out;
  dispatch(x.dtype(), relu && dy.defined(), [&]<class T, bool kRelu>() {
    out = dy.defined() ? channel_sums<T, true, kRelu>(x, y, dy, mean, invstd)
                       : channel_sums<T, false, false>(x, y, dy, mean, invstd);
  });
  return out;
}

void batchnorm_bwd_data(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& mean,
                        const Tensor& a, const Tensor& b, const Tensor& k, Tensor& dx) {
  dispatch(x.dtype(), relu, [&]<class T, bool kRelu>() { bwd_data<T, kRelu>(x, y, dy, mean, a, b, k, dx); });
}

}  // namespace gppf::kernels::host
