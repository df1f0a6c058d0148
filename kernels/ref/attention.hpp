#pragma once
// Plain double-precision GELU, softmax, batched GEMM, attention and token pooling: the oracles for
// the host and CUDA backends. Tensors are flat row-major vectors (shapes as in kernels/attention.hpp);
// outputs are resized and overwritten, except bmm's c, which is read when beta != 0.
#include <cstdint>
#include <vector>

#include "kernels/attention.hpp"

namespace gppf::kernels::ref {

void gelu_fwd(const std::vector<double>& x, std::vector<double>& y);
void gelu_bwd(const std::vector<double>& x, const std::vector<double>& dy, std::vector<double>& dx);

// Rows of `cols` values.
void softmax_fwd(std::int64_t cols, const std::vector<double>& x, std::vector<double>& y);
void softmax_bwd(std::int64_t cols, const std::vector<double>& y, const std::vector<double>& dy,
                 std::vector<double>& dx);

// c[i] = alpha op(a[i]) op(b[i]) + beta c[i] (beta = 0: c's old content ignored; c resized to fit).
void bmm(const BmmShape& g, double alpha, const std::vector<double>& a, const std::vector<double>& b, double beta,
         std::vector<double>& c);

// Attention over g.batch heads with g.scale, straight from the definitions (no GEMM composite).
void sdpa_fwd(const SdpaShape& g, const std::vector<double>& q, const std::vector<double>& k,
              const std::vector<double>& v, std::vector<double>& out, std::vector<double>& probs);
void sdpa_bwd(const SdpaShape& g, const std::vector<double>& q, const std::vector<double>& k,
              const std::vector<double>& v, const std::vector<double>& probs, const std::vector<double>& dout,
              std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv);

// x [n, t, d] -> y [n, d], and back.
void token_meanpool_fwd(std::int64_t n, std::int64_t t, std::int64_t d, const std::vector<double>& x,
                        std::vector<double>& y);
void token_meanpool_bwd(std::int64_t n, std::int64_t t, std::int64_t d, const std::vector<double>& dy,
                        std::vector<double>& dx);

}  // namespace gppf::kernels::ref
