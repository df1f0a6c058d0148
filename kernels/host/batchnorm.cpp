// Host batch norm: two passes over the data in training (per-channel sums, then the affine map), two
// in backward (per-channel sums of g and g * (x - mean), then dx). Rows are split across OpenMP
// threads; each thread sums blocks of rows in f32 (vectorised over channels) and folds every block
// into f64 partials, so long reductions stay exact to f32 rounding.
#include "kernels/batchnorm.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/functors/batchnorm.hpp"

namespace gppf::kernels::host {
namespace {

constexpr std::int64_t kRowBlock = 64;

int threads_for(std::int64_t elements) { return elements >= kParallelThreshold ? omp_get_max_threads() : 1; }

// Sums two per-channel quantities over all rows: row(r, a, b) adds row r into the f32 partials a, b.
// Returns the f64 totals in sum_a, sum_b (each `channels` long).
template <class RowFn>
void reduce_rows(std::int64_t rows, std::int64_t channels, const RowFn& row, std::vector<double>& sum_a,
                 std::vector<double>& sum_b) {
  const auto nc = static_cast<std::size_t>(channels);
  const int nt = threads_for(rows * channels);
  std::vector<double> parts(static_cast<std::size_t>(nt) * 2 * nc, 0.0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), nthr = omp_get_num_threads();
    const std::int64_t r0 = rows * t / nthr, r1 = rows * (t + 1) / nthr;
    std::vector<float> a(nc), b(nc);
    double* da = parts.data() + static_cast<std::size_t>(t) * 2 * nc;
    double* db = da + nc;
    for (std::int64_t start = r0; start < r1; start += kRowBlock) {
      std::fill(a.begin(), a.end(), 0.0f);
      std::fill(b.begin(), b.end(), 0.0f);
      const std::int64_t end = std::min(start + kRowBlock, r1);
      for (std::int64_t r = start; r < end; ++r) row(r, a.data(), b.data());
      for (std::size_t c = 0; c < nc; ++c) {
        da[c] += a[c];
        db[c] += b[c];
      }
    }
  }
  sum_a.assign(nc, 0.0);
  sum_b.assign(nc, 0.0);
  for (int t = 0; t < nt; ++t)
    for (std::size_t c = 0; c < nc; ++c) {
      sum_a[c] += parts[static_cast<std::size_t>(t) * 2 * nc + c];
      sum_b[c] += parts[static_cast<std::size_t>(t) * 2 * nc + nc + c];
    }
}

// Runs f.at(i, c) over every element, rows split across threads.
template <class F>
void for_each_row(std::int64_t rows, std::int64_t channels, const F& f) {
  const int nt = threads_for(rows * channels);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t base = r * channels;
    for (std::int64_t c = 0; c < channels; ++c) f.at(base + c, c);
  }
}

template <class T, bool kRelu>
void fwd_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
               Tensor& running_var, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  const std::int64_t channels = x.dim(-1), rows = x.numel() / channels;
  const auto nc = static_cast<std::size_t>(channels);
  const T* xs = static_cast<const T*>(x.data());
  // Shifting by the first row keeps the one-pass variance free of cancellation when |mean| >> std.
  std::vector<float> shift(nc);
  for (std::size_t c = 0; c < nc; ++c) shift[c] = normpool::load(xs[c]);
  std::vector<double> sum, sumsq;
  reduce_rows(
      rows, channels,
      [&](std::int64_t r, float* a, float* b) {
        const T* xr = xs + r * channels;
        for (std::int64_t c = 0; c < channels; ++c) {
          const float d = normpool::load(xr[c]) - shift[static_cast<std::size_t>(c)];
          a[c] += d;
          b[c] += d * d;
        }
      },
      sum, sumsq);
  const float* g = gamma.data_as<float>();
  float* rm = running_mean.data_as<float>();
  float* rv = running_var.data_as<float>();
  float* sm = save_mean.data_as<float>();
  float* si = save_invstd.data_as<float>();
  std::vector<float> scale(nc);
  const double m = p.momentum, n = static_cast<double>(rows);
  for (std::size_t c = 0; c < nc; ++c) {
    const double mean_d = sum[c] / n;
    const double var = std::max(sumsq[c] / n - mean_d * mean_d, 0.0);
    const double mean = shift[c] + mean_d;
    const double invstd = 1.0 / std::sqrt(var + static_cast<double>(p.eps));
    sm[c] = static_cast<float>(mean);
    si[c] = static_cast<float>(invstd);
    scale[c] = static_cast<float>(g[c] * invstd);
    rm[c] = static_cast<float>((1.0 - m) * rm[c] + m * mean);
    rv[c] = static_cast<float>((1.0 - m) * rv[c] + m * var * n / (n - 1.0));
  }
  const BatchNormApplyFunctor<T, kRelu> f{xs,           static_cast<T*>(y.data()), sm,
                                          scale.data(), beta.data_as<float>(),     channels};
  for_each_row(rows, channels, f);
}

template <class T, bool kRelu>
void fwd_infer(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
               const Tensor& running_mean, const Tensor& running_var, Tensor& y) {
  const std::int64_t channels = x.dim(-1), rows = x.numel() / channels;
  const auto nc = static_cast<std::size_t>(channels);
  const float* g = gamma.data_as<float>();
  const float* rv = running_var.data_as<float>();
  std::vector<float> scale(nc);
  for (std::size_t c = 0; c < nc; ++c)
    scale[c] = static_cast<float>(g[c] / std::sqrt(static_cast<double>(rv[c]) + static_cast<double>(p.eps)));
  const BatchNormApplyFunctor<T, kRelu> f{static_cast<const T*>(x.data()), static_cast<T*>(y.data()),
                                          running_mean.data_as<float>(),   scale.data(),
                                          beta.data_as<float>(),           channels};
  for_each_row(rows, channels, f);
}

template <class T, bool kRelu>
void bwd(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
         const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode) {
  const std::int64_t channels = x.dim(-1), rows = x.numel() / channels;
  const auto nc = static_cast<std::size_t>(channels);
  const T* xs = static_cast<const T*>(x.data());
  const T* ys = kRelu ? static_cast<const T*>(y.data()) : nullptr;
  const T* dys = static_cast<const T*>(dy.data());
  const float* mean = save_mean.data_as<float>();
  const float* invstd = save_invstd.data_as<float>();
  std::vector<double> sg, sgx;
  reduce_rows(
      rows, channels,
      [&](std::int64_t r, float* a, float* b) {
        const std::int64_t base = r * channels;
        for (std::int64_t c = 0; c < channels; ++c) {
          float gv = normpool::load(dys[base + c]);
          if constexpr (kRelu) gv = normpool::load(ys[base + c]) > 0.0f ? gv : 0.0f;
          a[c] += gv;
          b[c] += gv * (normpool::load(xs[base + c]) - mean[c]);
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
  const BatchNormBwdDataFunctor<T, kRelu> f{xs,        ys,        dys,     static_cast<T*>(dx.data()), mean, ca.data(),
                                            cb.data(), ck.data(), channels};
  for_each_row(rows, channels, f);
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

}  // namespace gppf::kernels::host
