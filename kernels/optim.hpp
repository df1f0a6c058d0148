#pragma once
// Optimizer kernels: fused per-tensor updates (SGD, AdamW, LARS, LAMB) and the deterministic
// reductions they need (sums of squares for global-norm clipping, overflow checks and trust ratios).
// Parameters, gradients and state are f32 and live on one device; src/optim/ drives these per step.
//
// Reductions write two doubles, out[0] and out[1], to memory on the tensors' device (a host pointer
// for host tensors, a device pointer for CUDA ones). Their summation order depends only on numel,
// never on the thread or block count the machine happens to have, so results are bitwise
// reproducible run to run on a given backend.
#include <span>

#include "core/tensor.hpp"
#include "kernels/functors/optim.hpp"

namespace gppf::kernels {

struct SgdParams {
  float lr = 0.1f;
  float momentum = 0.9f;  // 0: no momentum buffer
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;  // multiplies the gradient first (loss unscaling, clipping)
  bool nesterov = false;
};

struct AdamWParams {
  float lr = 1e-3f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;
  std::int64_t step = 1;  // this tensor's step count after the update (bias correction), >= 1
};

struct LarsParams {
  float lr = 0.1f;
  float momentum = 0.9f;
  float weight_decay = 0.0f;
  float trust = 1.0f;  // the tensor's trust ratio (optim::lars_trust_ratio)
  float grad_scale = 1.0f;
  bool nesterov = false;
};

struct LambParams {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-6f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;
  std::int64_t step = 1;
};

// One update of one tensor. Pointers, not references, so that a step can hand a whole list over.
struct SgdUpdate {
  SgdParams params;
  Tensor* param;
  const Tensor* grad;
  Tensor* momentum;  // null when params.momentum == 0
};
struct AdamWUpdate {
  AdamWParams params;
  Tensor* param;
  const Tensor* grad;
  Tensor* exp_avg;
  Tensor* exp_avg_sq;
};
struct LarsUpdate {
  LarsParams params;
  Tensor* param;
  const Tensor* grad;
  Tensor* momentum;  // null when params.momentum == 0
};
// LAMB pass 1: updates the moments; out[0] = sum p^2, out[1] = sum r^2 (r: the update before the
// trust ratio).
struct LambMoments {
  LambParams params;
  const Tensor* param;
  const Tensor* grad;
  Tensor* exp_avg;
  Tensor* exp_avg_sq;
  double* out;
};
// LAMB pass 2: param -= step * r (step = lr * trust ratio).
struct LambApply {
  LambParams params;
  float step;
  Tensor* param;
  const Tensor* exp_avg;
  const Tensor* exp_avg_sq;
};
// out[0] = sum x^2; out[1] = sum y^2 when y is given (else 0). Non-finite iff some element is.
struct SumSquares {
  const Tensor* x;
  const Tensor* y;
  double* out;
};

// Every tensor of a list lives on one device. On the host a list runs as one parallel loop over
// fixed-size chunks of all its tensors (one OpenMP fork/join per pass, not one per tensor); on CUDA
// as one launch per tensor, in list order on `stream`.
void sgd_update(std::span<const SgdUpdate> updates, const Stream& stream = Stream::host());
void adamw_update(std::span<const AdamWUpdate> updates, const Stream& stream = Stream::host());
void lars_update(std::span<const LarsUpdate> updates, const Stream& stream = Stream::host());
void lamb_moments(std::span<const LambMoments> updates, const Stream& stream = Stream::host());
void lamb_apply(std::span<const LambApply> updates, const Stream& stream = Stream::host());
void sum_squares(std::span<const SumSquares> sums, const Stream& stream = Stream::host());

// Single-tensor forms.
void sum_squares(const Tensor& x, const Tensor* y, double* out, const Stream& stream = Stream::host());
// x *= alpha.
void scale_(Tensor& x, float alpha, const Stream& stream = Stream::host());
// dst = src for many f32 tensors of one device in a few launches (one per pack of tensors): the
// trainer's snapshot of the BN statistics before a step, and their restore after a skipped one.
struct CopyJob {
  const Tensor* src;
  Tensor* dst;
};
void copy_tensors(std::span<const CopyJob> jobs, const Stream& stream = Stream::host());

// Backends: functors with their element counts (and reduction outputs), already checked.
namespace host {
void sgd_update(std::span<const SgdFunctor> fs, std::span<const std::int64_t> ns);
void adamw_update(std::span<const AdamWFunctor> fs, std::span<const std::int64_t> ns);
void lars_update(std::span<const LarsFunctor> fs, std::span<const std::int64_t> ns);
void lamb_moments(std::span<const LambMomentsFunctor> fs, std::span<const std::int64_t> ns,
                  std::span<double* const> outs);
void lamb_apply(std::span<const LambApplyFunctor> fs, std::span<const std::int64_t> ns);
void sum_squares(std::span<const SumSquaresFunctor> fs, std::span<const std::int64_t> ns,
                 std::span<double* const> outs);
void scale_(const ScaleFunctor& f, std::int64_t n);
void copy_tensors(std::span<const CopyFunctor> fs, std::span<const std::int64_t> ns);
}  // namespace host
namespace cuda {
void sgd_update(std::span<const SgdFunctor> fs, std::span<const std::int64_t> ns, const Stream& stream);
void adamw_update(std::span<const AdamWFunctor> fs, std::span<const std::int64_t> ns, const Stream& stream);
void lars_update(std::span<const LarsFunctor> fs, std::span<const std::int64_t> ns, const Stream& stream);
void lamb_moments(std::span<const LambMomentsFunctor> fs, std::span<const std::int64_t> ns,
                  std::span<double* const> outs, const Stream& stream);
void lamb_apply(std::span<const LambApplyFunctor> fs, std::span<const std::int64_t> ns, const Stream& stream);
void sum_squares(std::span<const SumSquaresFunctor> fs, std::span<const std::int64_t> ns, std::span<double* const> outs,
                 const Stream& stream);
void scale_(const ScaleFunctor& f, std::int64_t n, const Stream& stream);
void copy_tensors(std::span<const CopyFunctor> fs, std::span<const std::int64_t> ns, const Stream& stream);
}  // namespace cuda

}  // namespace gppf::kernels
