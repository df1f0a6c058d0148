#include "kernels/ref/elementwise.hpp"

#include <cstddef>

namespace gppf::kernels::ref {

Vec relu_fwd(const Vec& x) {
  Vec y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] > 0.0 ? x[i] : 0.0;
  return y;
}

Vec relu_bwd(const Vec& y, const Vec& dy) {
  Vec dx(y.size());
  for (std::size_t i = 0; i < y.size(); ++i) dx[i] = y[i] > 0.0 ? dy[i] : 0.0;
  return dx;
}

Vec add(const Vec& a, const Vec& b) {
  Vec y(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) y[i] = a[i] + b[i];
  return y;
}

Vec add_relu_fwd(const Vec& a, const Vec& b) { return relu_fwd(add(a, b)); }

Vec axpby(double alpha, const Vec& x, double beta, const Vec& y) {
  Vec out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = alpha * x[i] + (beta == 0.0 ? 0.0 : beta * y[i]);
  return out;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

Vec reduce_rows(const Vec& x, std::int64_t cols) {
  Vec y(static_cast<std::size_t>(cols), 0.0);
  for (std::size_t i = 0; i < x.size(); ++i) y[i % static_cast<std::size_t>(cols)] += x[i];
  return y;
}

}  // namespace gppf::kernels::ref
