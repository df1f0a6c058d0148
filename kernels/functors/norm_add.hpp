#pragma once
// The per-element math of batchnorm_add_relu_segments and segment_dot_bn (kernels/segments.hpp),
// written once for the host and CUDA: the normalised value is formed as the batch-norm functors form
// it ((z - mean) * scale + beta, scale = gamma * invstd in f32), and added to the running sum as
// segment_copy adds a gated row, so in f32 the fused pass gives what the passes one by one give.
#include "core/hd.hpp"

namespace gppf::kernels {

GPPF_HD GPPF_INLINE float norm_value(float z, float mean, float scale, float beta) { return (z - mean) * scale + beta; }

GPPF_HD GPPF_INLINE float add_gated(float acc, float gate, float term) {
  const float v = gate * term;
  return acc + v;
}

GPPF_HD GPPF_INLINE float relu_value(float v) { return v < 0.0f ? 0.0f : v; }  // NaN passes, as ReluFwdFunctor

}  // namespace gppf::kernels
