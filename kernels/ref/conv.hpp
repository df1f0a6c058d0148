#pragma once
// The plain double-precision convolution every backend is tested against: direct loops over the
// definition, no tricks. NHWC activations, OHWI weights, sizes from conv2d_geometry.
#include "kernels/conv.hpp"

namespace gppf::kernels::ref {

// y[n,p,q,k] = bias[k] + sum_{r,s,c} x[n, p*sh - ph + r*dh, q*sw - pw + s*dw, g*Cg + c] * w[k,r,s,c]
// (g = k / Kg; taps outside the image read zero). bias may be null. Overwrites y.
void conv2d_fwd(const Conv2dParams& p, const Conv2dGeometry& g, const double* x, const double* w, const double* bias,
                double* y);
// dx = d(sum y * dy)/dx. Overwrites dx.
void conv2d_bwd_data(const Conv2dParams& p, const Conv2dGeometry& g, const double* dy, const double* w, double* dx);
// dw = d(sum y * dy)/dw, dbias[k] = sum of dy over n, p, q (dbias may be null). Overwrites both.
void conv2d_bwd_filter(const Conv2dParams& p, const Conv2dGeometry& g, const double* x, const double* dy, double* dw,
                       double* dbias);

}  // namespace gppf::kernels::ref
