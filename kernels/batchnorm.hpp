#pragma once
// Batch normalisation over channels-last tensors, optionally fused with a ReLU. Statistics are per
// channel (the last dimension) over every other dimension; the CUDA backend takes f32 or bf16
// activations, the host f32 or bf16 (math in f32); gamma, beta and all statistics are f32 [C].
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
}  // namespace cuda

}  // namespace gppf::kernels
