#include "kernels/ref/linear.hpp"

#include <cstddef>

namespace gppf::kernels::ref {
namespace {
std::size_t at(std::int64_t row, std::int64_t cols, std::int64_t col) {
  return static_cast<std::size_t>(row * cols + col);
}
}  // namespace

Vec linear_fwd(const LinearDims& d, const Vec& x, const Vec& w, const Vec& bias) {
  Vec y(static_cast<std::size_t>(d.n * d.out));
  for (std::int64_t i = 0; i < d.n; ++i)
    for (std::int64_t o = 0; o < d.out; ++o) {
      double s = bias.empty() ? 0.0 : bias[static_cast<std::size_t>(o)];
      for (std::int64_t k = 0; k < d.in; ++k) s += x[at(i, d.in, k)] * w[at(o, d.in, k)];
      y[at(i, d.out, o)] = s;
    }
  return y;
}

Vec linear_bwd_data(const LinearDims& d, const Vec& dy, const Vec& w) {
  Vec dx(static_cast<std::size_t>(d.n * d.in), 0.0);
  for (std::int64_t i = 0; i < d.n; ++i)
    for (std::int64_t o = 0; o < d.out; ++o)
      for (std::int64_t k = 0; k < d.in; ++k) dx[at(i, d.in, k)] += dy[at(i, d.out, o)] * w[at(o, d.in, k)];
  return dx;
}

void linear_bwd_weight(const LinearDims& d, const Vec& x, const Vec& dy, Vec& dw, Vec& dbias) {
  dw.assign(static_cast<std::size_t>(d.out * d.in), 0.0);
  dbias.assign(static_cast<std::size_t>(d.out), 0.0);
  for (std::int64_t i = 0; i < d.n; ++i)
    for (std::int64_t o = 0; o < d.out; ++o) {
      const double g = dy[at(i, d.out, o)];
      dbias[static_cast<std::size_t>(o)] += g;
      for (std::int64_t k = 0; k < d.in; ++k) dw[at(o, d.in, k)] += g * x[at(i, d.in, k)];
    }
}

Vec gemm(const GemmShape& g, double alpha, const Vec& a, const Vec& b, double beta, const Vec& c) {
  Vec out(static_cast<std::size_t>(g.m * g.n));
  for (std::int64_t i = 0; i < g.m; ++i)
    for (std::int64_t j = 0; j < g.n; ++j) {
      double s = 0.0;
      for (std::int64_t k = 0; k < g.k; ++k) {
        const double av = g.trans_a ? a[at(k, g.m, i)] : a[at(i, g.k, k)];
        const double bv = g.trans_b ? b[at(j, g.k, k)] : b[at(k, g.n, j)];
        s += av * bv;
      }
      out[at(i, g.n, j)] = alpha * s + (beta == 0.0 ? 0.0 : beta * c[at(i, g.n, j)]);
    }
  return out;
}

}  // namespace gppf::kernels::ref
