#pragma once
// Plain double-precision layer norm: the oracle for the host and CUDA backends. x, y, dy, dx are flat
// row-major [rows, d]; gamma, beta, dgamma, dbeta hold d values, mean and invstd one per row.
// Outputs are resized and overwritten.
#include <cstdint>
#include <vector>

#include "kernels/layernorm.hpp"

namespace gppf::kernels::ref {

void layernorm_fwd(const LayerNormParams& p, std::int64_t d, const std::vector<double>& x,
                   const std::vector<double>& gamma, const std::vector<double>& beta, std::vector<double>& y,
                   std::vector<double>& mean, std::vector<double>& invstd);
void layernorm_bwd(std::int64_t d, const std::vector<double>& x, const std::vector<double>& dy,
                   const std::vector<double>& gamma, const std::vector<double>& mean, const std::vector<double>& invstd,
                   std::vector<double>& dx, std::vector<double>& dgamma, std::vector<double>& dbeta);

}  // namespace gppf::kernels::ref
