#pragma once
// Per-element loss math shared by the host and CUDA backends. Each op has
//   norm(i)        the element's share of the normaliser (a positive count, a weight),
//   denom(sum)     the divisor made from the normaliser's sum,
//   operator()(i, gscale)  the element's unscaled loss term (returned in double for the sum), writing
//                  gscale * d(term)/d(input) into the gradient when there is one.
// The backends only differ in how they order the two reductions (fixed chunks on the host, fixed
// grid and tree on CUDA). Math is in float on both sides; sums are in double.
#include <math.h>  // the float functions (expf, log1pf, ...) by the global names CUDA device code has too

#include <cstdint>

#include "kernels/functors/cast.hpp"

namespace gppf::kernels {

// sigmoid(x), sigmoid(-x) and their logs from one exp and one log1p, without overflow or cancellation
// for either sign (log sigmoid(x) = -softplus(-x)).
struct SigmoidParts {
  float p, q, log_p, log_q;
};
GPPF_HD GPPF_INLINE SigmoidParts sigmoid_parts(float x) {
  const float e = expf(-fabsf(x));
  const float l = log1pf(e);
  const float r = 1.0f / (1.0f + e);
  if (x >= 0.0f) return {r, e * r, -l, -x - l};
  return {e * r, r, x - l, -l};
}

// powf, with the exponents the default parameters use done by multiplication (powf is the slowest
// step of the focal losses otherwise).
GPPF_HD GPPF_INLINE float pow_f(float x, float e) {
  if (e == 2.0f) return x * x;
  if (e == 1.0f) return x;
  if (e == 4.0f) {
    const float x2 = x * x;
    return x2 * x2;
  }
  if (e == 0.0f) return 1.0f;
  return powf(x, e);
}

struct CenterNetFocalOp {
  const void* logits;
  const void* target;
  void* grad;  // null: no gradient
  FloatKind logit_kind, target_kind, grad_kind;
  float alpha, beta;

  // CenterNet's _sigmoid: clamp(sigmoid(x), 1e-4, 1 - 1e-4), in float.
  static constexpr float kLo = 1e-4f;
  static constexpr float kHi = 1.0f - 1e-4f;

  GPPF_HD double norm(std::int64_t i) const { return load_float(target, i, target_kind) == 1.0f ? 1.0 : 0.0; }
  GPPF_HD static double denom(double num_pos) { return num_pos > 1.0 ? num_pos : 1.0; }

  GPPF_HD double operator()(std::int64_t i, float gscale) const {
    const float x = load_float(logits, i, logit_kind);
    const float t = load_float(target, i, target_kind);
    SigmoidParts s = sigmoid_parts(x);  // p, 1 - p and their logs
    bool inside = true;                 // torch.clamp passes the gradient only for lo <= p <= hi
    if (s.p < kLo) {
      s = {kLo, 1.0f - kLo, logf(kLo), logf(1.0f - kLo)};
      inside = false;
    } else if (s.p > kHi) {
      s = {kHi, 1.0f - kHi, logf(kHi), logf(1.0f - kHi)};
      inside = false;
    }
    const float p = s.p, q = s.q, log_p = s.log_p, log_q = s.log_q;
    float l = 0.0f, g = 0.0f;
    if (t == 1.0f) {
      // l = -(1-p)^a log p;  dl/dx = (1-p)^a (a p log p - (1-p))
      const float qa = pow_f(q, alpha);
      l = -qa * log_p;
      g = qa * (alpha * p * log_p - q);
    } else if (t < 1.0f) {
      // l = -(1-t)^b p^a log(1-p);  dl/dx = (1-t)^b p^a (p - a (1-p) log(1-p))
      const float w = pow_f(1.0f - t, beta) * pow_f(p, alpha);
      l = -w * log_q;
      g = w * (p - alpha * q * log_q);
    }
    if (grad) store_float(grad, i, grad_kind, inside ? gscale * g : 0.0f);
    return l;
  }
};

struct SigmoidFocalOp {
  const void* logits;
  const void* target;
  void* grad;
  FloatKind logit_kind, target_kind, grad_kind;
  float alpha, gamma;

  GPPF_HD double norm(std::int64_t i) const { return load_float(target, i, target_kind) > 0.5f ? 1.0 : 0.0; }
  GPPF_HD static double denom(double n) { return n > 1.0 ? n : 1.0; }

  GPPF_HD double operator()(std::int64_t i, float gscale) const {
    const float x = load_float(logits, i, logit_kind);
    const float t = load_float(target, i, target_kind);
    const SigmoidParts s = sigmoid_parts(x);
    const float sp = s.p, sn = s.q;  // p and 1 - p, each without cancellation
    // BCE with logits, written so that a confident correct logit gives a tiny positive value, not 0.
    const float ce = -(t * s.log_p + (1.0f - t) * s.log_q);
    const float m = t * sn + (1.0f - t) * sp;  // 1 - p_t
    const float a = alpha >= 0.0f ? alpha * t + (1.0f - alpha) * (1.0f - t) : 1.0f;
    const float mg = pow_f(m, gamma);
    const float l = a * ce * mg;
    if (grad) {
      const float dce = (1.0f - t) * sp - t * sn;  // p - t
      const float dm = (1.0f - 2.0f * t) * sp * sn;
      // gamma m^(gamma-1) dm -> 0 as m -> 0 (dm vanishes at least as fast as m)
      const float dmg = m > 0.0f ? gamma * pow_f(m, gamma - 1.0f) * dm : 0.0f;
      store_float(grad, i, grad_kind, gscale * a * (dce * mg + ce * dmg));
    }
    return l;
  }
};

struct SmoothL1Op {
  const void* pred;
  const void* target;
  const void* weight;  // null: all ones
  void* grad;
  FloatKind pred_kind, target_kind, weight_kind, grad_kind;
  float beta;  // 0: plain L1

  GPPF_HD double norm(std::int64_t i) const { return weight ? load_float(weight, i, weight_kind) : 1.0; }
  GPPF_HD static double denom(double weight_sum) { return weight_sum > 1e-6 ? weight_sum : 1e-6; }

  GPPF_HD double operator()(std::int64_t i, float gscale) const {
    const float d = load_float(pred, i, pred_kind) - load_float(target, i, target_kind);
    const float ad = fabsf(d);
    float l, g;
    if (ad < beta) {
      l = 0.5f * d * d / beta;
      g = d / beta;
    } else {
      l = ad - 0.5f * beta;
      g = d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f);
    }
    if (weight) {
      const float w = load_float(weight, i, weight_kind);
      l *= w;
      g *= w;
    }
    if (grad) store_float(grad, i, grad_kind, gscale * g);
    return l;
  }
};

}  // namespace gppf::kernels
