#pragma once
// Layer normalisation over the last dimension (the transformer blocks of gppf-vit), exactly
// PyTorch's nn.LayerNorm with elementwise affine: per row of D values,
//   mean = sum(x) / D, var = sum((x - mean)^2) / D (biased), invstd = 1 / sqrt(var + eps),
//   y = (x - mean) * invstd * gamma + beta.
// No running statistics: training and inference are the same map. x, y, dy, dx share f32 or bf16 on
// both backends (math in f32); gamma, beta, the saved statistics and the parameter gradients are f32.
//
// On CUDA, forward is 1 kernel (a warp per row); backward 3 (a warp per row for dx, then the
// parameter gradients' partial column sums and their fold): every device counts those launches.
#include "kernels/common.hpp"

namespace gppf::kernels {

struct LayerNormParams {
  float eps = 1e-5f;  // PyTorch's default; ViTs commonly use 1e-6
};

// x, y: [..., D] with at least one row. gamma, beta: f32 [D]. save_mean, save_invstd: f32 with one
// value per row (x's shape without its last dim, or flat [rows]), written for backward.
void layernorm_fwd(const LayerNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                   Tensor& save_mean, Tensor& save_invstd, const Stream& s = Stream::host());
// dx overwritten; dgamma = sum over rows of dy * xhat and dbeta = sum over rows of dy (f32 [D]),
// written or accumulated per param_mode. Deterministic: fixed reduction orders on both backends,
// independent of the host's thread count.
void layernorm_bwd(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                   const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode,
                   const Stream& s = Stream::host());

// Backends: arguments already checked by the entry points above.
namespace host {
void layernorm_fwd(const LayerNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                   Tensor& save_mean, Tensor& save_invstd);
void layernorm_bwd(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                   const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode);
}  // namespace host
namespace cuda {
void layernorm_fwd(const LayerNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                   Tensor& save_mean, Tensor& save_invstd, const Stream& s);
void layernorm_bwd(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                   const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode,
                   const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
