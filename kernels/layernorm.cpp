#include "kernels/layernorm.hpp"

#include <cmath>

#include "core/counters.hpp"
#include "core/graph.hpp"
#include "kernels/elementwise.hpp"

namespace gppf::kernels {
namespace {

// x: at least 1-D, f32 or bf16, with a non-empty last dim and at least one row; returns the row count.
std::int64_t check_rows(const char* op, const Tensor& x) {
  GPPF_CHECK(x.defined() && x.ndim() >= 1, op, ": x must be [..., D], got ",
             x.defined() ? x.desc() : std::string("an undefined tensor"));
  GPPF_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16, op, ": x must be f32 or bf16, got ", x.desc());
  GPPF_CHECK(x.numel() > 0, op, ": x ", x.desc(), " is empty");
  return x.numel() / x.dim(-1);
}

void check_device(const char* op, const char* what, const Tensor& t, const Tensor& x) {
  GPPF_CHECK(t.device() == x.device(), op, ": ", what, " ", t.desc(), " must be on ", x.device().str(), " with x ",
             x.desc());
}

// t: defined, of this shape and dtype, on x's device.
void check_operand(const char* op, const char* what, const Tensor& t, const Shape& shape, DType dtype,
                   const Tensor& x) {
  GPPF_CHECK(t.defined(), op, ": ", what, " is undefined");
  check_shape(op, what, t, shape);
  check_dtype(op, what, t, dtype);
  check_device(op, what, t, x);
}

void check_like(const char* op, const char* what, const Tensor& t, const Tensor& x) {
  check_operand(op, what, t, x.shape(), x.dtype(), x);
}

void check_vector(const char* op, const char* what, const Tensor& t, const Tensor& x) {
  check_operand(op, what, t, {x.dim(-1)}, DType::F32, x);
}

// One f32 value per row of x: x's shape without its last dim, or flat [rows].
void check_row_stats(const char* op, const char* what, const Tensor& t, const Tensor& x, std::int64_t rows) {
  GPPF_CHECK(t.defined(), op, ": ", what, " is undefined");
  const Shape lead(x.shape().begin(), x.shape().end() - 1);
  GPPF_CHECK(t.shape() == lead || t.shape() == Shape{rows}, op, ": ", what, " expected ", shape_str(lead), " or [",
             rows, "] (one value per row of x ", x.desc(), "), got ", t.desc());
  check_dtype(op, what, t, DType::F32);
  check_device(op, what, t, x);
}

// The checks forward and backward share.
void check_inputs(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& save_mean,
                  const Tensor& save_invstd) {
  const std::int64_t rows = check_rows(op, x);
  check_vector(op, "gamma", gamma, x);
  check_row_stats(op, "save_mean", save_mean, x, rows);
  check_row_stats(op, "save_invstd", save_invstd, x, rows);
}

}  // namespace

void layernorm_fwd(const LayerNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                   Tensor& save_mean, Tensor& save_invstd, const Stream& s) {
  constexpr const char* op = "layernorm_fwd";
  GPPF_CHECK(p.eps > 0.0f && std::isfinite(p.eps), op, ": eps must be positive, got ", p.eps);
  check_inputs(op, x, gamma, save_mean, save_invstd);
  check_like(op, "y", y, x);
  check_vector(op, "beta", beta, x);
  if (launch_on_cuda(x.device()))
    cuda::layernorm_fwd(p, x, gamma, beta, y, save_mean, save_invstd, device_stream(s, x));
  else
    runtime::host_launch([p, x, gamma, beta, y, save_mean, save_invstd]() mutable {
      host::layernorm_fwd(p, x, gamma, beta, y, save_mean, save_invstd);
    });
}

void layernorm_bwd(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                   const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode,
                   const Stream& s) {
  constexpr const char* op = "layernorm_bwd";
  check_inputs(op, x, gamma, save_mean, save_invstd);
  check_like(op, "dy", dy, x);
  check_like(op, "dx", dx, x);
  check_vector(op, "dgamma", dgamma, x);
  check_vector(op, "dbeta", dbeta, x);
  runtime::count_launches(2);  // CUDA's dx, column-sum and fold kernels, counted on every device
  if (launch_on_cuda(x.device()))
    cuda::layernorm_bwd(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode, device_stream(s, x));
  else
    runtime::host_launch([x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode]() mutable {
      host::layernorm_bwd(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, param_mode);
    });
}

}  // namespace gppf::kernels
