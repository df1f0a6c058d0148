// Host layer norm: the row functors of kernels/functors/layernorm.hpp over OpenMP threads. Backward
// also sums dgamma and dbeta: each fixed block of kRowBlock rows sums its rows in f32 (while its dx
// rows are computed), and the blocks are folded in order in f64. The blocks depend only on the
// shape, so the result is the same for every thread count.
#include "kernels/layernorm.hpp"

#include <algorithm>
#include <vector>

#include "kernels/functors/layernorm.hpp"

namespace gppf::kernels::host {
namespace {

constexpr std::int64_t kRowBlock = 32;

template <class T>
void fwd(const LayerNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
         Tensor& save_mean, Tensor& save_invstd) {
  const std::int64_t d = x.dim(-1), rows = x.numel() / d;
  for_each_row_host(rows, d, layernorm_fwd_row<T, SerialLanes>(p, x, gamma, beta, y, save_mean, save_invstd));
}

template <class T>
void bwd(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd,
         Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode) {
  const std::int64_t d = x.dim(-1), rows = x.numel() / d, blocks = (rows + kRowBlock - 1) / kRowBlock;
  const T* xs = static_cast<const T*>(x.data());
  const T* dys = static_cast<const T*>(dy.data());
  const float* mean = save_mean.data_as<float>();
  const float* invstd = save_invstd.data_as<float>();
  const auto fdx = layernorm_bwd_data_row<T, SerialLanes>(x, dy, gamma, save_mean, save_invstd, dx);
  // Block b's dgamma partials at part_g[b * d], its dbeta partials at part_b[b * d].
  std::vector<float> parts(static_cast<std::size_t>(2 * blocks * d), 0.0f);
  float* part_g = parts.data();
  float* part_b = part_g + blocks * d;
#pragma omp parallel for schedule(static) if (blocks > 1 && rows * d >= kParallelThreshold)
  for (std::int64_t b = 0; b < blocks; ++b) {
    float* pg = part_g + b * d;
    float* pb = part_b + b * d;
    for (std::int64_t r = b * kRowBlock; r < std::min(rows, (b + 1) * kRowBlock); ++r) {
      fdx(r);
      for (std::int64_t j = 0; j < d; ++j) layernorm_param_terms(xs, dys, mean, invstd, r, r * d + j, pg[j], pb[j]);
    }
  }
  const LayerNormParamFold fold{
      part_g, part_b, blocks, d, dgamma.data_as<float>(), dbeta.data_as<float>(), param_mode == GradMode::Accumulate};
  parallel_for_host(d, fold);
}

}  // namespace

void layernorm_fwd(const LayerNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                   Tensor& save_mean, Tensor& save_invstd) {
  if (x.dtype() == DType::BF16)
    fwd<bf16>(p, x, gamma, beta, y, save_mean, save_invstd);
  else
    fwd<float>(p, x, gamma, beta, y, save_mean, save_invstd);
}

void layernorm_bwd(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                   const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode) {
  if (x.dtype() == DType::BF16)
    bwd<bf16>(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode);
  else
    bwd<float>(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode);
}

}  // namespace gppf::kernels::host
