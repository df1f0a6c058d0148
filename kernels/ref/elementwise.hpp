#pragma once
// Plain double-precision references of kernels/elementwise.hpp: the oracle of the tests. Backward
// functions return the gradient itself (GradMode::Overwrite); tests add it to the old value for
// GradMode::Accumulate.
#include <cstdint>
#include <vector>

namespace gppf::kernels::ref {

using Vec = std::vector<double>;

Vec relu_fwd(const Vec& x);
// dx = dy * (y > 0)
Vec relu_bwd(const Vec& y, const Vec& dy);
Vec add(const Vec& a, const Vec& b);
Vec add_relu_fwd(const Vec& a, const Vec& b);
// alpha * x + beta * y (beta == 0 ignores y)
Vec axpby(double alpha, const Vec& x, double beta, const Vec& y);
double dot(const Vec& a, const Vec& b);
// x [rows, cols] -> [cols]
Vec reduce_rows(const Vec& x, std::int64_t cols);

}  // namespace gppf::kernels::ref
