#pragma once
// The element-wise parts of conv2d that the vendor libraries leave to us, for host and device:
// the bias add after a CUDA forward (bias may be f32 while y is bf16).
#include <cstdint>

#include "kernels/functors/cast.hpp"

namespace gppf::kernels {

// y[i] += bias[i % k] over an NHWC tensor whose innermost dimension is k.
struct ConvBiasAddFunctor {
  void* y;
  const void* bias;
  std::int64_t k;
  FloatKind y_kind, bias_kind;
  GPPF_HD void operator()(std::int64_t i) const {
    store_float(y, i, y_kind, load_float(y, i, y_kind) + load_float(bias, i % k, bias_kind));
  }
};

}  // namespace gppf::kernels
