#include "kernels/linear.hpp"

#include <cblas.h>

namespace gppf::kernels::host {

void gemm(const GemmShape& g, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c) {
  // Row-major: A is [m, k] ([k, m] when transposed), B is [k, n] ([n, k] when transposed).
  const auto m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans, g.trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a.data_as<float>(), g.trans_a ? m : k, b.data_as<float>(), g.trans_b ? k : n, beta,
              c.data_as<float>(), n);
}

}  // namespace gppf::kernels::host
