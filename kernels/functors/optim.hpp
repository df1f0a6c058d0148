#pragma once
// Fused optimizer updates and the reductions they need, written once for both backends
// (docs/OPTIMIZATION.md has the formulas). Every update functor reads param, grad and state once and
// writes param and state once. `grad_scale` multiplies the raw gradient first: it folds the loss
// scaler's 1/scale and the global-norm clip factor into the same pass, so gradients are never
// rewritten in place.
//
// Reduction functors have `operator()(i, a0, a1)` and add element i's contributions to two double
// accumulators; kernels/host/optim.cpp and kernels/cuda/optim.cu sum them in a fixed order.
#include <cmath>
#include <cstdint>

#include "kernels/parallel_for.hpp"

namespace gppf::kernels {

// Plain SGD with momentum (dampening 0), optional Nesterov, decoupled weight decay.
struct SgdFunctor {
  float* p;
  const float* g;
  float* m;  // null when momentum == 0
  float lr, momentum, weight_decay, grad_scale;
  bool nesterov;
  GPPF_HD void operator()(std::int64_t i) const {
    const float gi = g[i] * grad_scale;
    float d = gi;
    if (m) {
      const float mi = momentum * m[i] + gi;
      m[i] = mi;
      d = nesterov ? gi + momentum * mi : mi;
    }
    p[i] = p[i] * (1.0f - lr * weight_decay) - lr * d;
  }
};

// AdamW (Loshchilov & Hutter) as PyTorch writes it; inv_bc1/inv_bc2 = 1/(1 - beta^t).
struct AdamWFunctor {
  float* p;
  const float* g;
  float* m;
  float* v;
  float lr, beta1, beta2, eps, weight_decay, grad_scale, inv_bc1, inv_bc2;
  GPPF_HD void operator()(std::int64_t i) const {
    const float gi = g[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * (1.0f - lr * weight_decay) - lr * (mi * inv_bc1) / (sqrtf(vi * inv_bc2) + eps);
  }
};

// LARS (You et al. 2017): u = trust * (g + wd p), m = mu m + u, p -= lr (nesterov ? u + mu m : m).
// The trust ratio comes from the norms reduced beforehand (1 for no-decay tensors).
struct LarsFunctor {
  float* p;
  const float* g;
  float* m;  // null when momentum == 0
  float lr, momentum, weight_decay, trust, grad_scale;
  bool nesterov;
  GPPF_HD void operator()(std::int64_t i) const {
    const float pi = p[i];
    const float u = trust * (g[i] * grad_scale + weight_decay * pi);
    float d = u;
    if (m) {
      const float mi = momentum * m[i] + u;
      m[i] = mi;
      d = nesterov ? u + momentum * mi : mi;
    }
    p[i] = pi - lr * d;
  }
};

// LAMB (You et al. 2019), pass 1: updates the moments and reduces a0 += p^2, a1 += r^2 with
// r = m_hat / (sqrt(v_hat) + eps) + wd p.
struct LambMomentsFunctor {
  const float* p;
  const float* g;
  float* m;
  float* v;
  float beta1, beta2, eps, weight_decay, grad_scale, inv_bc1, inv_bc2;
  GPPF_HD void operator()(std::int64_t i, double& a0, double& a1) const {
    const float gi = g[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i];
    const float r = (mi * inv_bc1) / (sqrtf(vi * inv_bc2) + eps) + weight_decay * pi;
    a0 += static_cast<double>(pi) * pi;
    a1 += static_cast<double>(r) * r;
  }
};

// LAMB, pass 2: p -= step * r with step = lr * trust, r recomputed from the updated moments.
struct LambApplyFunctor {
  float* p;
  const float* m;
  const float* v;
  float step, eps, weight_decay, inv_bc1, inv_bc2;
  GPPF_HD void operator()(std::int64_t i) const {
    const float pi = p[i];
    const float r = (m[i] * inv_bc1) / (sqrtf(v[i] * inv_bc2) + eps) + weight_decay * pi;
    p[i] = pi - step * r;
  }
};

// a0 += x^2, and a1 += y^2 when y is given. Squares of f32 values summed in double cannot overflow,
// so a non-finite sum means a non-finite element: the loss scaler's overflow flag comes for free.
struct SumSquaresFunctor {
  const float* x;
  const float* y;  // may be null
  GPPF_HD void operator()(std::int64_t i, double& a0, double& a1) const {
    const double xi = x[i];
    a0 += xi * xi;
    if (y) {
      const double yi = y[i];
      a1 += yi * yi;
    }
  }
};

struct ScaleFunctor {
  float* x;
  float alpha;
  GPPF_HD void operator()(std::int64_t i) const { x[i] *= alpha; }
};

struct CopyFunctor {
  const float* src;
  float* dst;
  GPPF_HD void operator()(std::int64_t i) const { dst[i] = src[i]; }
};

}  // namespace gppf::kernels
