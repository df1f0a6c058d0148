#include "kernels/functors/resample.hpp"

#include <algorithm>
#include <vector>

#include "kernels/resample.hpp"

namespace gppf::kernels::host {
namespace {

ResampleGeom geom(const Tensor& in, const Tensor& out) {
  return {in.dim(0), in.dim(1), in.dim(2), out.dim(1), out.dim(2), in.dim(3)};
}

// The taps are computed once per pixel and the channel loop runs innermost (contiguous in NHWC).
void add_scaled(float* dst, const float* src, float w, std::int64_t c) {
  for (std::int64_t k = 0; k < c; ++k) dst[k] += w * src[k];
}

// For each input index along one axis, the outputs that read it and their weights (CSR), so that the
// pixel loop of the backward does no tap arithmetic.
struct AxisTaps {
  std::vector<std::int64_t> start, dst;
  std::vector<float> weight;
};
AxisTaps axis_taps(std::int64_t in, std::int64_t out) {
  AxisTaps t;
  t.start.push_back(0);
  for (std::int64_t i = 0; i < in; ++i) {
    std::int64_t first, last;
    linear_window(i, in, out, first, last);
    for (std::int64_t d = first; d < last; ++d) {
      const float w = linear_weight(d, i, in, out);
      if (w == 0.0f) continue;
      t.dst.push_back(d);
      t.weight.push_back(w);
    }
    t.start.push_back(static_cast<std::int64_t>(t.dst.size()));
  }
  return t;
}

}  // namespace

void upsample_fwd(const UpsampleParams& p, const Tensor& x, Tensor& y) {
  const ResampleGeom g = geom(x, y);
  const float* px = x.data_as<float>();
  float* py = y.data_as<float>();
  const bool bilinear = p.mode == UpsampleMode::Bilinear;
  const std::int64_t pixels = g.n * g.oh * g.ow;
#pragma omp parallel for schedule(static) if (pixels * g.c >= kParallelThreshold)
  for (std::int64_t q = 0; q < pixels; ++q) {
    const std::int64_t ow = q % g.ow, oh = (q / g.ow) % g.oh, n = q / (g.ow * g.oh);
    const float* img = px + n * g.ih * g.iw * g.c;
    float* dst = py + q * g.c;
    if (!bilinear) {
      const float* src = img + (nearest_src(oh, g.ih, g.oh) * g.iw + nearest_src(ow, g.iw, g.ow)) * g.c;
      std::copy(src, src + g.c, dst);
      continue;
    }
    const LinearTap th = linear_tap(oh, g.ih, g.oh), tw = linear_tap(ow, g.iw, g.ow);
    const float* a = img + (th.i0 * g.iw + tw.i0) * g.c;
    const float* b = img + (th.i0 * g.iw + tw.i1) * g.c;
    const float* c = img + (th.i1 * g.iw + tw.i0) * g.c;
    const float* d = img + (th.i1 * g.iw + tw.i1) * g.c;
    const float lw = tw.lambda, lh = th.lambda;
    for (std::int64_t k = 0; k < g.c; ++k) {
      const float top = (1.0f - lw) * a[k] + lw * b[k];
      const float bottom = (1.0f - lw) * c[k] + lw * d[k];
      dst[k] = (1.0f - lh) * top + lh * bottom;
    }
  }
}

void upsample_bwd(const UpsampleParams& p, const Tensor& dy, Tensor& dx, bool accumulate) {
  const ResampleGeom g = geom(dx, dy);
  const float* pdy = dy.data_as<float>();
  float* pdx = dx.data_as<float>();
  const bool bilinear = p.mode == UpsampleMode::Bilinear;
  const std::int64_t pixels = g.n * g.ih * g.iw;
  const AxisTaps th = bilinear ? axis_taps(g.ih, g.oh) : AxisTaps{}, tw = bilinear ? axis_taps(g.iw, g.ow) : AxisTaps{};
#pragma omp parallel for schedule(static) if (pixels * g.c >= kParallelThreshold)
  for (std::int64_t q = 0; q < pixels; ++q) {
    const std::int64_t iw = q % g.iw, ih = (q / g.iw) % g.ih, n = q / (g.iw * g.ih);
    const float* img = pdy + n * g.oh * g.ow * g.c;
    float* dst = pdx + q * g.c;
    if (!accumulate) std::fill(dst, dst + g.c, 0.0f);
    if (!bilinear) {
      const std::int64_t h1 = nearest_first(ih + 1, g.ih, g.oh), w1 = nearest_first(iw + 1, g.iw, g.ow);
      for (std::int64_t oh = nearest_first(ih, g.ih, g.oh); oh < h1; ++oh)
        for (std::int64_t ow = nearest_first(iw, g.iw, g.ow); ow < w1; ++ow)
          add_scaled(dst, img + (oh * g.ow + ow) * g.c, 1.0f, g.c);
      continue;
    }
    for (std::int64_t a = th.start[ih]; a < th.start[ih + 1]; ++a)
      for (std::int64_t b = tw.start[iw]; b < tw.start[iw + 1]; ++b)
        add_scaled(dst, img + (th.dst[a] * g.ow + tw.dst[b]) * g.c, th.weight[a] * tw.weight[b], g.c);
  }
}

}  // namespace gppf::kernels::host
