#pragma once
// Plain double-precision batch norm: the oracle for the host and CUDA backends. x, y, dy, dx are flat
// row-major [rows, channels] (channels last); per-channel vectors hold `channels` values. Outputs
// are resized; running statistics are updated in place.
#include <cstdint>
#include <vector>

#include "kernels/batchnorm.hpp"

namespace gppf::kernels::ref {

void batchnorm_fwd_train(const BatchNormParams& p, std::int64_t channels, const std::vector<double>& x,
                         const std::vector<double>& gamma, const std::vector<double>& beta,
                         std::vector<double>& running_mean, std::vector<double>& running_var, std::vector<double>& y,
                         std::vector<double>& save_mean, std::vector<double>& save_invstd);
void batchnorm_fwd_infer(const BatchNormParams& p, std::int64_t channels, const std::vector<double>& x,
                         const std::vector<double>& gamma, const std::vector<double>& beta,
                         const std::vector<double>& running_mean, const std::vector<double>& running_var,
                         std::vector<double>& y);
// Overwrites dx, dgamma and dbeta. y is read only with p.relu (it masks dy where y <= 0).
void batchnorm_bwd(const BatchNormParams& p, std::int64_t channels, const std::vector<double>& x,
                   const std::vector<double>& y, const std::vector<double>& dy, const std::vector<double>& gamma,
                   const std::vector<double>& save_mean, const std::vector<double>& save_invstd,
                   std::vector<double>& dx, std::vector<double>& dgamma, std::vector<double>& dbeta);

}  // namespace gppf::kernels::ref
