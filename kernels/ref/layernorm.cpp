#include "kernels/ref/layernorm.hpp"

#include <cmath>

#include "core/error.hpp"

namespace gppf::kernels::ref {
namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

std::int64_t rows_of(const char* op, std::int64_t d, const std::vector<double>& x) {
  GPPF_CHECK(d > 0 && static_cast<std::int64_t>(x.size()) % d == 0, op, ": ", x.size(),
             " values do not split into rows of ", d);
  return static_cast<std::int64_t>(x.size()) / d;
}

}  // namespace

void layernorm_fwd(const LayerNormParams& p, std::int64_t d, const std::vector<double>& x,
                   const std::vector<double>& gamma, const std::vector<double>& beta, std::vector<double>& y,
                   std::vector<double>& mean, std::vector<double>& invstd) {
  const std::int64_t rows = rows_of("ref::layernorm_fwd", d, x);
  y.assign(x.size(), 0.0);
  mean.assign(at(rows), 0.0);
  invstd.assign(at(rows), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    double mu = 0.0;
    for (std::int64_t j = 0; j < d; ++j) mu += x[at(r * d + j)];
    mu /= double(d);
    double var = 0.0;
    for (std::int64_t j = 0; j < d; ++j) var += (x[at(r * d + j)] - mu) * (x[at(r * d + j)] - mu);
    var /= double(d);
    const double is = 1.0 / std::sqrt(var + double(p.eps));
    for (std::int64_t j = 0; j < d; ++j) y[at(r * d + j)] = (x[at(r * d + j)] - mu) * is * gamma[at(j)] + beta[at(j)];
    mean[at(r)] = mu;
    invstd[at(r)] = is;
  }
}

void layernorm_bwd(std::int64_t d, const std::vector<double>& x, const std::vector<double>& dy,
                   const std::vector<double>& gamma, const std::vector<double>& mean, const std::vector<double>& invstd,
                   std::vector<double>& dx, std::vector<double>& dgamma, std::vector<double>& dbeta) {
  const std::int64_t rows = rows_of("ref::layernorm_bwd", d, x);
  dx.assign(x.size(), 0.0);
  dgamma.assign(at(d), 0.0);
  dbeta.assign(at(d), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const double mu = mean[at(r)], is = invstd[at(r)];
    // With g = dy * gamma and xhat = (x - mu) * is: dx = is * (g - mean(g) - xhat * mean(g * xhat)).
    double sg = 0.0, sgx = 0.0;
    for (std::int64_t j = 0; j < d; ++j) {
      const std::size_t i = at(r * d + j);
      const double xhat = (x[i] - mu) * is, g = dy[i] * gamma[at(j)];
      sg += g;
      sgx += g * xhat;
      dgamma[at(j)] += dy[i] * xhat;
      dbeta[at(j)] += dy[i];
    }
    for (std::int64_t j = 0; j < d; ++j) {
      const std::size_t i = at(r * d + j);
      dx[i] = is * (dy[i] * gamma[at(j)] - sg / double(d) - (x[i] - mu) * is * sgx / double(d));
    }
  }
}

}  // namespace gppf::kernels::ref
