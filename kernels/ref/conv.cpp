#include "kernels/ref/conv.hpp"

#include <algorithm>

namespace gppf::kernels::ref {
namespace {

// Calls f(y_index, x_index, w_index) for every multiply-add of the convolution (taps in the padding
// are skipped). All three passes are this one loop with a different accumulation.
template <class F>
void for_each_tap(const Conv2dParams& p, const Conv2dGeometry& g, F f) {
  const std::int64_t cg = g.cg(), kg = g.kg();
  for (std::int64_t n = 0; n < g.n; ++n)
    for (std::int64_t op = 0; op < g.p; ++op)
      for (std::int64_t oq = 0; oq < g.q; ++oq)
        for (std::int64_t k = 0; k < g.k; ++k) {
          const std::int64_t yi = ((n * g.p + op) * g.q + oq) * g.k + k;
          const std::int64_t c0 = (k / kg) * cg;
          for (std::int64_t r = 0; r < g.r; ++r) {
            const std::int64_t ih = op * p.stride_h - p.pad_h + r * p.dilation_h;
            if (ih < 0 || ih >= g.h) continue;
            for (std::int64_t s = 0; s < g.s; ++s) {
              const std::int64_t iw = oq * p.stride_w - p.pad_w + s * p.dilation_w;
              if (iw < 0 || iw >= g.w) continue;
              for (std::int64_t c = 0; c < cg; ++c) {
                const std::int64_t xi = ((n * g.h + ih) * g.w + iw) * g.c + c0 + c;
                const std::int64_t wi = ((k * g.r + r) * g.s + s) * cg + c;
                f(yi, xi, wi);
              }
            }
          }
        }
}

}  // namespace

void conv2d_fwd(const Conv2dParams& p, const Conv2dGeometry& g, const double* x, const double* w, const double* bias,
                double* y) {
  const std::int64_t ny = g.n * g.p * g.q * g.k;
  for (std::int64_t i = 0; i < ny; ++i) y[i] = bias ? bias[i % g.k] : 0.0;
  for_each_tap(p, g, [&](std::int64_t yi, std::int64_t xi, std::int64_t wi) { y[yi] += x[xi] * w[wi]; });
}

void conv2d_bwd_data(const Conv2dParams& p, const Conv2dGeometry& g, const double* dy, const double* w, double* dx) {
  std::fill(dx, dx + g.n * g.h * g.w * g.c, 0.0);
  for_each_tap(p, g, [&](std::int64_t yi, std::int64_t xi, std::int64_t wi) { dx[xi] += dy[yi] * w[wi]; });
}

void conv2d_bwd_filter(const Conv2dParams& p, const Conv2dGeometry& g, const double* x, const double* dy, double* dw,
                       double* dbias) {
  std::fill(dw, dw + g.k * g.r * g.s * g.cg(), 0.0);
  for_each_tap(p, g, [&](std::int64_t yi, std::int64_t xi, std::int64_t wi) { dw[wi] += x[xi] * dy[yi]; });
  if (dbias) {
    std::fill(dbias, dbias + g.k, 0.0);
    const std::int64_t ny = g.n * g.p * g.q * g.k;
    for (std::int64_t i = 0; i < ny; ++i) dbias[i % g.k] += dy[i];
  }
}

}  // namespace gppf::kernels::ref
