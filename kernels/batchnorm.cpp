#include "kernels/batchnorm.hpp"

#include <cmath>

#include "core/counters.hpp"
#include "core/graph.hpp"

namespace gppf::kernels {
namespace {

// Activations: at least 2-D, f32 or bf16; returns the channel count.
std::int64_t check_activation(const char* op, const Tensor& x) {
  GPPF_CHECK(x.defined() && x.ndim() >= 2, op, ": x must be [..., C] with at least 2 dims, got ",
             x.defined() ? x.desc() : std::string("an undefined tensor"));
  GPPF_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16, op, ": x must be f32 or bf16, got ", x.desc());
  return x.dim(-1);
}

void check_like(const char* op, const char* what, const Tensor& t, const Tensor& x) {
  check_shape(op, what, t, x.shape());
  check_dtype(op, what, t, x.dtype());
  check_same_device(op, x, t);
}

void check_channel_vector(const char* op, const char* what, const Tensor& t, const Tensor& x) {
  check_shape(op, what, t, {x.dim(-1)});
  check_dtype(op, what, t, DType::F32);
  check_same_device(op, x, t);
}

void check_params(const char* op, const BatchNormParams& p) {
  GPPF_CHECK(p.eps > 0.0f && std::isfinite(p.eps), op, ": eps must be positive, got ", p.eps);
  GPPF_CHECK(p.momentum >= 0.0f && p.momentum <= 1.0f, op, ": momentum must be in [0, 1], got ", p.momentum);
}

// The checks every training-statistics entry point shares; returns the channel count.
void check_train_stats(const char* op, const BatchNormParams& p, const Tensor& x, const Tensor& running_mean,
                       const Tensor& running_var, const Tensor& save_mean, const Tensor& save_invstd) {
  check_params(op, p);
  const std::int64_t c = check_activation(op, x);
  GPPF_CHECK(c > 0 && x.numel() / c >= 2, op, ": x ", x.desc(),
             " needs at least 2 values per channel to estimate batch statistics");
  check_channel_vector(op, "running_mean", running_mean, x);
  check_channel_vector(op, "running_var", running_var, x);
  check_channel_vector(op, "save_mean", save_mean, x);
  check_channel_vector(op, "save_invstd", save_invstd, x);
}

}  // namespace

void batchnorm_fwd_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                         const Stream& s) {
  constexpr const char* op = "batchnorm_fwd_train";
  check_train_stats(op, p, x, running_mean, running_var, save_mean, save_invstd);
  check_like(op, "y", y, x);
  check_channel_vector(op, "gamma", gamma, x);
  check_channel_vector(op, "beta", beta, x);
  runtime::count_launches(2);  // CUDA's statistics, finalize and apply kernels, counted on every device
  if (launch_on_cuda(x.device()))
    cuda::batchnorm_fwd_train(p, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd, s);
  else
    runtime::host_launch([p, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd]() mutable {
      host::batchnorm_fwd_train(p, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd);
    });
}

void batchnorm_stats(const BatchNormParams& p, const Tensor& x, Tensor& running_mean, Tensor& running_var,
                     Tensor& save_mean, Tensor& save_invstd) {
  constexpr const char* op = "batchnorm_stats";
  check_train_stats(op, p, x, running_mean, running_var, save_mean, save_invstd);
  GPPF_CHECK(x.device().is_host(), op, ": host only, got ", x.desc());
  runtime::host_launch([p, x, running_mean, running_var, save_mean, save_invstd]() mutable {
    host::batchnorm_stats(p, x, running_mean, running_var, save_mean, save_invstd);
  });
}

void batchnorm_fwd_infer(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& running_mean, const Tensor& running_var, Tensor& y, const Stream& s) {
  constexpr const char* op = "batchnorm_fwd_infer";
  check_params(op, p);
  check_activation(op, x);
  check_like(op, "y", y, x);
  check_channel_vector(op, "gamma", gamma, x);
  check_channel_vector(op, "beta", beta, x);
  check_channel_vector(op, "running_mean", running_mean, x);
  check_channel_vector(op, "running_var", running_var, x);
  if (x.numel() == 0) return;
  runtime::count_launches(1);  // CUDA's scale and apply kernels
  if (launch_on_cuda(x.device()))
    cuda::batchnorm_fwd_infer(p, x, gamma, beta, running_mean, running_var, y, s);
  else
    runtime::host_launch([p, x, gamma, beta, running_mean, running_var, y]() mutable {
      host::batchnorm_fwd_infer(p, x, gamma, beta, running_mean, running_var, y);
    });
}

void batchnorm_bwd(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                   const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                   GradMode param_mode, const Stream& s) {
  constexpr const char* op = "batchnorm_bwd";
  check_params(op, p);
  const std::int64_t c = check_activation(op, x);
  GPPF_CHECK(c > 0 && x.numel() / c >= 1, op, ": x ", x.desc(), " is empty");
  if (p.relu) check_like(op, "y", y, x);
  check_like(op, "dy", dy, x);
  check_like(op, "dx", dx, x);
  check_channel_vector(op, "gamma", gamma, x);
  check_channel_vector(op, "save_mean", save_mean, x);
  check_channel_vector(op, "save_invstd", save_invstd, x);
  check_channel_vector(op, "dgamma", dgamma, x);
  check_channel_vector(op, "dbeta", dbeta, x);
  runtime::count_launches(2);  // CUDA's sums, finalize and input-gradient kernels
  if (launch_on_cuda(x.device()))
    cuda::batchnorm_bwd(p, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode, s);
  else
    runtime::host_launch([p, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode]() mutable {
      host::batchnorm_bwd(p, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode);
    });
}

std::vector<double> batchnorm_channel_sums(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy,
                                           const Tensor& mean, const Tensor& invstd, const Stream& s) {
  constexpr const char* op = "batchnorm_channel_sums";
  GPPF_CHECK(!runtime::capturing(), op, ": returns values to the host; it cannot run inside a captured graph");
  check_activation(op, x);
  if (dy.defined()) {
    check_like(op, "dy", dy, x);
    if (relu) check_like(op, "y", y, x);
    check_channel_vector(op, "mean", mean, x);
    check_channel_vector(op, "invstd", invstd, x);
  }
  if (x.numel() == 0) return std::vector<double>(static_cast<std::size_t>(2 * x.dim(-1)), 0.0);
  runtime::count_launches(1);  // CUDA's partial sums and fold
  if (launch_on_cuda(x.device())) return cuda::batchnorm_channel_sums(relu, x, y, dy, mean, invstd, s);
  return host::batchnorm_channel_sums(relu, x, y, dy, mean, invstd);
}

void batchnorm_bwd_data(bool relu, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& mean,
                        const Tensor& a, const Tensor& b, const Tensor& k, Tensor& dx, const Stream& s) {
  constexpr const char* op = "batchnorm_bwd_data";
  check_activation(op, x);
  if (relu) check_like(op, "y", y, x);
  check_like(op, "dy", dy, x);
  check_like(op, "dx", dx, x);
  for (const auto& [what, t] : {std::pair<const char*, const Tensor*>{"mean", &mean}, {"a", &a}, {"b", &b}, {"k", &k}})
    check_channel_vector(op, what, *t, x);
  if (x.numel() == 0) return;
  if (launch_on_cuda(x.device()))
    cuda::batchnorm_bwd_data(relu, x, y, dy, mean, a, b, k, dx, s);
  else
    runtime::host_launch(
        [relu, x, y, dy, mean, a, b, k, dx]() mutable { host::batchnorm_bwd_data(relu, x, y, dy, mean, a, b, k, dx); });
}

}  // namespace gppf::kernels
