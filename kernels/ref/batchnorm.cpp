#include "kernels/ref/batchnorm.hpp"

#include <cmath>

#include "core/error.hpp"

namespace gppf::kernels::ref {
namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

std::int64_t rows_of(const char* op, std::int64_t channels, const std::vector<double>& x) {
  GPPF_CHECK(channels > 0 && static_cast<std::int64_t>(x.size()) % channels == 0, op, ": ", x.size(),
             " values do not split into rows of ", channels, " channels");
  return static_cast<std::int64_t>(x.size()) / channels;
}

double relu_if(bool relu, double v) { return relu && v < 0.0 ? 0.0 : v; }

}  // namespace

void batchnorm_fwd_train(const BatchNormParams& p, std::int64_t channels, const std::vector<double>& x,
                         const std::vector<double>& gamma, const std::vector<double>& beta,
                         std::vector<double>& running_mean, std::vector<double>& running_var, std::vector<double>& y,
                         std::vector<double>& save_mean, std::vector<double>& save_invstd) {
  const std::int64_t rows = rows_of("ref::batchnorm_fwd_train", channels, x);
  GPPF_CHECK(rows >= 2, "ref::batchnorm_fwd_train: needs at least 2 rows");
  y.assign(x.size(), 0.0);
  save_mean.assign(at(channels), 0.0);
  save_invstd.assign(at(channels), 0.0);
  const double m = p.momentum;
  for (std::int64_t c = 0; c < channels; ++c) {
    double mean = 0.0;
    for (std::int64_t r = 0; r < rows; ++r) mean += x[at(r * channels + c)];
    mean /= double(rows);
    double var = 0.0;
    for (std::int64_t r = 0; r < rows; ++r) var += (x[at(r * channels + c)] - mean) * (x[at(r * channels + c)] - mean);
    var /= double(rows);
    const double invstd = 1.0 / std::sqrt(var + double(p.eps));
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::size_t i = at(r * channels + c);
      y[i] = relu_if(p.relu, gamma[at(c)] * (x[i] - mean) * invstd + beta[at(c)]);
    }
    save_mean[at(c)] = mean;
    save_invstd[at(c)] = invstd;
    running_mean[at(c)] = (1.0 - m) * running_mean[at(c)] + m * mean;
    running_var[at(c)] = (1.0 - m) * running_var[at(c)] + m * var * double(rows) / double(rows - 1);
  }
}

void batchnorm_fwd_infer(const BatchNormParams& p, std::int64_t channels, const std::vector<double>& x,
                         const std::vector<double>& gamma, const std::vector<double>& beta,
                         const std::vector<double>& running_mean, const std::vector<double>& running_var,
                         std::vector<double>& y) {
  const std::int64_t rows = rows_of("ref::batchnorm_fwd_infer", channels, x);
  y.assign(x.size(), 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < channels; ++c) {
      const std::size_t i = at(r * channels + c);
      const double invstd = 1.0 / std::sqrt(running_var[at(c)] + double(p.eps));
      y[i] = relu_if(p.relu, gamma[at(c)] * (x[i] - running_mean[at(c)]) * invstd + beta[at(c)]);
    }
}

void batchnorm_bwd(const BatchNormParams& p, std::int64_t channels, const std::vector<double>& x,
                   const std::vector<double>& y, const std::vector<double>& dy, const std::vector<double>& gamma,
                   const std::vector<double>& save_mean, const std::vector<double>& save_invstd,
                   std::vector<double>& dx, std::vector<double>& dgamma, std::vector<double>& dbeta) {
  const std::int64_t rows = rows_of("ref::batchnorm_bwd", channels, x);
  dx.assign(x.size(), 0.0);
  dgamma.assign(at(channels), 0.0);
  dbeta.assign(at(channels), 0.0);
  auto g = [&](std::size_t i) { return p.relu && !(y[i] > 0.0) ? 0.0 : dy[i]; };
  for (std::int64_t c = 0; c < channels; ++c) {
    const double mean = save_mean[at(c)], invstd = save_invstd[at(c)];
    double sg = 0.0, sgx = 0.0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::size_t i = at(r * channels + c);
      sg += g(i);
      sgx += g(i) * (x[i] - mean) * invstd;
    }
    dbeta[at(c)] = sg;
    dgamma[at(c)] = sgx;
    const double k = gamma[at(c)] * invstd / double(rows);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::size_t i = at(r * channels + c);
      dx[i] = k * (double(rows) * g(i) - sg - (x[i] - mean) * invstd * sgx);
    }
  }
}

}  // namespace gppf::kernels::ref
