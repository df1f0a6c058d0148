#pragma once
// Plain double-precision pooling: the oracle for the host and CUDA backends. Tensors are NHWC, flat
// row-major std::vector<double>, with their shape passed alongside.
#include <vector>

#include "kernels/pool.hpp"

namespace gppf::kernels::ref {

std::vector<double> maxpool2d_fwd(const Pool2dParams& p, const Shape& x_shape, const std::vector<double>& x);
// Each window's gradient goes to its first maximum (row-major window order).
std::vector<double> maxpool2d_bwd(const Pool2dParams& p, const Shape& x_shape, const std::vector<double>& x,
                                  const std::vector<double>& dy);
std::vector<double> avgpool2d_fwd(const Pool2dParams& p, const Shape& x_shape, const std::vector<double>& x);
std::vector<double> avgpool2d_bwd(const Pool2dParams& p, const Shape& x_shape, const std::vector<double>& dy);
// x [N,H,W,C] -> [N,C], and back.
std::vector<double> global_avgpool_fwd(const Shape& x_shape, const std::vector<double>& x);
std::vector<double> global_avgpool_bwd(const Shape& x_shape, const std::vector<double>& dy);

}  // namespace gppf::kernels::ref
