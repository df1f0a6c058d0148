#pragma once
// Plain double-precision references of kernels/resample.hpp (NHWC). The backward scatters each output
// gradient to its taps, an independent check of the backends' gather.
#include <vector>

#include "kernels/resample.hpp"

namespace gppf::kernels::ref {

using Vec = std::vector<double>;

// x of x_shape [N, H, W, C] -> y of y_shape [N, OH, OW, C]
Vec upsample_fwd(const UpsampleParams& p, const Shape& x_shape, const Vec& x, const Shape& y_shape);
// dy of y_shape -> dx of x_shape
Vec upsample_bwd(const UpsampleParams& p, const Shape& x_shape, const Shape& y_shape, const Vec& dy);

}  // namespace gppf::kernels::ref
