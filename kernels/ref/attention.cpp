#include "kernels/ref/attention.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace gppf::kernels::ref {
namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

std::int64_t rows_of(const char* op, std::int64_t cols, const std::vector<double>& x) {
  GPPF_CHECK(cols > 0 && static_cast<std::int64_t>(x.size()) % cols == 0, op, ": ", x.size(),
             " values do not split into rows of ", cols);
  return static_cast<std::int64_t>(x.size()) / cols;
}

constexpr double kPi = 3.14159265358979323846;

}  // namespace

void gelu_fwd(const std::vector<double>& x, std::vector<double>& y) {
  y.resize(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = 0.5 * x[i] * (1.0 + std::erf(x[i] / std::sqrt(2.0)));
}

void gelu_bwd(const std::vector<double>& x, const std::vector<double>& dy, std::vector<double>& dx) {
  dx.resize(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double cdf = 0.5 * (1.0 + std::erf(x[i] / std::sqrt(2.0)));
    const double pdf = std::exp(-0.5 * x[i] * x[i]) / std::sqrt(2.0 * kPi);
    dx[i] = dy[i] * (cdf + x[i] * pdf);
  }
}

void softmax_fwd(std::int64_t cols, const std::vector<double>& x, std::vector<double>& y) {
  const std::int64_t rows = rows_of("ref::softmax_fwd", cols, x);
  y.assign(x.size(), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto row = x.begin() + r * cols;
    const double m = *std::max_element(row, row + cols);
    double s = 0.0;
    for (std::int64_t j = 0; j < cols; ++j) s += std::exp(x[at(r * cols + j)] - m);
    for (std::int64_t j = 0; j < cols; ++j) y[at(r * cols + j)] = std::exp(x[at(r * cols + j)] - m) / s;
  }
}

void softmax_bwd(std::int64_t cols, const std::vector<double>& y, const std::vector<double>& dy,
                 std::vector<double>& dx) {
  const std::int64_t rows = rows_of("ref::softmax_bwd", cols, y);
  dx.assign(y.size(), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    double s = 0.0;
    for (std::int64_t j = 0; j < cols; ++j) s += dy[at(r * cols + j)] * y[at(r * cols + j)];
    for (std::int64_t j = 0; j < cols; ++j) {
      const std::size_t i = at(r * cols + j);
      dx[i] = y[i] * (dy[i] - s);
    }
  }
}

void bmm(const BmmShape& g, double alpha, const std::vector<double>& a, const std::vector<double>& b, double beta,
         std::vector<double>& c) {
  c.resize(at(g.batch * g.m * g.n), 0.0);
  for (std::int64_t i = 0; i < g.batch; ++i) {
    const double* ai = a.data() + i * g.m * g.k;
    const double* bi = b.data() + i * g.k * g.n;
    double* ci = c.data() + i * g.m * g.n;
    for (std::int64_t r = 0; r < g.m; ++r)
      for (std::int64_t col = 0; col < g.n; ++col) {
        double s = 0.0;
        for (std::int64_t l = 0; l < g.k; ++l)
          s += (g.trans_a ? ai[l * g.m + r] : ai[r * g.k + l]) * (g.trans_b ? bi[col * g.k + l] : bi[l * g.n + col]);
        double& out = ci[r * g.n + col];
        out = alpha * s + (beta == 0.0 ? 0.0 : beta * out);
      }
  }
}

void sdpa_fwd(const SdpaShape& g, const std::vector<double>& q, const std::vector<double>& k,
              const std::vector<double>& v, std::vector<double>& out, std::vector<double>& probs) {
  const double scale = g.scale;
  std::vector<double> scores(at(g.batch * g.tq * g.tk));
  for (std::int64_t b = 0; b < g.batch; ++b)
    for (std::int64_t i = 0; i < g.tq; ++i)
      for (std::int64_t j = 0; j < g.tk; ++j) {
        double s = 0.0;
        for (std::int64_t e = 0; e < g.dh; ++e)
          s += q[at((b * g.tq + i) * g.dh + e)] * k[at((b * g.tk + j) * g.dh + e)];
        scores[at((b * g.tq + i) * g.tk + j)] = scale * s;
      }
  softmax_fwd(g.tk, scores, probs);
  out.assign(at(g.batch * g.tq * g.dv), 0.0);
  for (std::int64_t b = 0; b < g.batch; ++b)
    for (std::int64_t i = 0; i < g.tq; ++i)
      for (std::int64_t j = 0; j < g.tk; ++j) {
        const double pij = probs[at((b * g.tq + i) * g.tk + j)];
        for (std::int64_t e = 0; e < g.dv; ++e)
          out[at((b * g.tq + i) * g.dv + e)] += pij * v[at((b * g.tk + j) * g.dv + e)];
      }
}

void sdpa_bwd(const SdpaShape& g, const std::vector<double>& q, const std::vector<double>& k,
              const std::vector<double>& v, const std::vector<double>& probs, const std::vector<double>& dout,
              std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv) {
  const double scale = g.scale;
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  std::vector<double> dp(at(g.tk));
  for (std::int64_t b = 0; b < g.batch; ++b)
    for (std::int64_t i = 0; i < g.tq; ++i) {
      const double* p = probs.data() + (b * g.tq + i) * g.tk;
      const double* go = dout.data() + (b * g.tq + i) * g.dv;
      // dP[j] = dout_i . v_j; dv_j += P[j] dout_i; dS[j] = P[j] (dP[j] - sum_l P[l] dP[l]).
      double s = 0.0;
      for (std::int64_t j = 0; j < g.tk; ++j) {
        double d = 0.0;
        for (std::int64_t e = 0; e < g.dv; ++e) {
          d += go[e] * v[at((b * g.tk + j) * g.dv + e)];
          dv[at((b * g.tk + j) * g.dv + e)] += p[j] * go[e];
        }
        dp[at(j)] = d;
        s += p[j] * d;
      }
      for (std::int64_t j = 0; j < g.tk; ++j) {
        const double ds = p[j] * (dp[at(j)] - s) * scale;
        for (std::int64_t e = 0; e < g.dh; ++e) {
          dq[at((b * g.tq + i) * g.dh + e)] += ds * k[at((b * g.tk + j) * g.dh + e)];
          dk[at((b * g.tk + j) * g.dh + e)] += ds * q[at((b * g.tq + i) * g.dh + e)];
        }
      }
    }
}

void token_meanpool_fwd(std::int64_t n, std::int64_t t, std::int64_t d, const std::vector<double>& x,
                        std::vector<double>& y) {
  y.assign(at(n * d), 0.0);
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t i = 0; i < t; ++i)
      for (std::int64_t j = 0; j < d; ++j) y[at(b * d + j)] += x[at((b * t + i) * d + j)] / double(t);
}

void token_meanpool_bwd(std::int64_t n, std::int64_t t, std::int64_t d, const std::vector<double>& dy,
                        std::vector<double>& dx) {
  dx.assign(at(n * t * d), 0.0);
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t i = 0; i < t; ++i)
      for (std::int64_t j = 0; j < d; ++j) dx[at((b * t + i) * d + j)] = dy[at(b * d + j)] / double(t);
}

}  // namespace gppf::kernels::ref
