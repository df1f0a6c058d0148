#pragma once
// Batch normalisation over channels-last tensors, optionally fused with a ReLU. Statistics are per
// channel (the last dimension) over every other dimension; the CUDA backend takes f32 or bf16
// activations, the host f32 or bf16 (math in f32); gamma, beta and all statistics are f32 [C].
#include <vector>

#include "kernels/common.hpp"

namespace gppf::kernels {

struct BatchNormParams {
  float eps = 1e-5f;
  float momentum = 0.1f;
  bool relu = false;
};

// x, y: [..., C] channels-last (NHWC or [N,C]); statistics over all but the last dim.
// gamma, beta, running_mean, running_var, save_mean, save_invstd: f32 [C].
// Training: batch statistics; running_mean/var updated in place with momentum (running_var uses the
// unbiased variance, as PyTorch); save_mean/save_invstd are written for backward. With p.relu, y = relu(bn(x)).
void batchnorm_fwd_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                         const Stream& s = Stream::host());
void batchnorm_fwd_infer(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& running_mean, const Tensor& running_var, Tensor& y,
                         const Stream& s = Stream::host());
// dx overwritten; dgamma/dbeta written or accumulated per param_mode. With p.relu, y (the forward
// output) masks dy (dy where y > 0); without it y is not read and may be an undefined Tensor.
void batchnorm_bwd(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                   const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                   GradMode param_mode, const Stream& s = Stream::host());

// Host only: the statistics half of batchnorm_fwd_train (save_mean/save_invstd written, running
// statistics updated, no output), for callers that fuse the affine map into a pass of their own.
void batchnorm_stats(const BatchNormParams& p, const Tensor& x, Tensor& running_mean, Tensor& running_var,
                     Tensor& save_mean, Tensor& save_invstd);

// Synchronised batch norm's local halves (src/nn/layers.cpp, BatchNorm::forward_synced): the
// per-channel sums one replica contributes, accumulated in double and returned on the host (a sync on
// a GPU, counted). Forward (dy undefined): [sum x (C), sum x^2 (C)]. Backward: [sum g (C),
// sum g * (x - mean) * invstd (C)], g = dy masked by y > 0 when relu (y read only then).
std::vector<double> batchnorm_channel_sums(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy,
                                           const Tensor& mean, const Tensor& invstd, const Stream& s = Stream::host());
// The input gradient from given per-channel coefficients (f32 [C]), dx = a * (g - b - (x - mean) * k),
// g as above: with a = gamma * invstd, b = sum g / n and k = invstd * sum g xhat / n over every
// replica's rows, the synchronised backward.
void batchnorm_bwd_data(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& mean,
                        const Tensor& a, const Tensor& b, const Tensor& k, Tensor& dx,
                        const Stream& s = Stream::host());

// Backends: arguments already checked by the entry points above.
namespace host {
void batchnorm_stats(const BatchNormParams& p, const Tensor& x, Tensor& running_mean, Tensor& running_var,
                     Tensor& save_mean, Tensor& save_invstd);
void batchnorm_fwd_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean, Tensor& save_invstd);
void batchnorm_fwd_infer(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& running_mean, const Tensor& running_var, Tensor& y);
void batchnorm_bwd(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                   const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                   GradMode param_mode);
std::vector<double> batchnorm_channel_sums(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy,
                                           const Tensor& mean, const Tensor& invstd);
void batchnorm_bwd_data(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& mean,
                        const Tensor& a, const Tensor& b, const Tensor& k, Tensor& dx);
}  // namespace host
namespace cuda {
void batchnorm_fwd_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                         const Stream& s);
void batchnorm_fwd_infer(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& running_mean, const Tensor& running_var, Tensor& y, const Stream& s);
void batchnorm_bwd(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                   const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                   GradMode param_mode, const Stream& s);
std::vector<double> batchnorm_channel_sums(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy,
                                           const Tensor& mean, const Tensor& invstd, const Stream& s);
void batchnorm_bwd_data(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& mean,
                        const Tensor& a, const Tensor& b, const Tensor& k, Tensor& dx, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
