#pragma once
// Plain double-precision references of kernels/linear.hpp (row-major, the oracle of the tests).
#include <cstdint>
#include <vector>

#include "kernels/linear.hpp"

namespace gppf::kernels::ref {

using Vec = std::vector<double>;

struct LinearDims {
  std::int64_t n = 0, in = 0, out = 0;
};

// x [n, in], w [out, in], bias [out] or empty -> y [n, out]
Vec linear_fwd(const LinearDims& d, const Vec& x, const Vec& w, const Vec& bias);
// dy [n, out] -> dx [n, in]
Vec linear_bwd_data(const LinearDims& d, const Vec& dy, const Vec& w);
// -> dw [out, in], dbias [out]
void linear_bwd_weight(const LinearDims& d, const Vec& x, const Vec& dy, Vec& dw, Vec& dbias);
// alpha * op(A) op(B) + beta * C, C [m, n] (beta == 0 ignores C)
Vec gemm(const GemmShape& g, double alpha, const Vec& a, const Vec& b, double beta, const Vec& c);

}  // namespace gppf::kernels::ref
