#include "kernels/ref/resample.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace gppf::kernels::ref {
namespace {

struct Tap {
  std::int64_t i0, i1;
  double lambda;
};

Tap tap(const UpsampleParams& p, std::int64_t d, std::int64_t in, std::int64_t out) {
  if (p.mode == UpsampleMode::Nearest) return {d * in / out, 0, 0.0};
  const double src =
      std::max(0.0, (static_cast<double>(d) + 0.5) * static_cast<double>(in) / static_cast<double>(out) - 0.5);
  const auto i0 = std::min(static_cast<std::int64_t>(std::floor(src)), in - 1);
  return {i0, std::min(i0 + 1, in - 1), src - static_cast<double>(i0)};
}

// Calls f(input offset, output offset, weight) for every tap of every output pixel (channel 0).
template <class F>
void for_each_tap(const UpsampleParams& p, const Shape& xs, const Shape& ys, F f) {
  const std::int64_t n = xs[0], ih = xs[1], iw = xs[2], c = xs[3], oh = ys[1], ow = ys[2];
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t h = 0; h < oh; ++h)
      for (std::int64_t w = 0; w < ow; ++w) {
        const std::int64_t out = ((b * oh + h) * ow + w) * c;
        const Tap th = tap(p, h, ih, oh), tw = tap(p, w, iw, ow);
        auto in = [&](std::int64_t hh, std::int64_t ww) { return ((b * ih + hh) * iw + ww) * c; };
        if (p.mode == UpsampleMode::Nearest) {
          f(in(th.i0, tw.i0), out, 1.0);
          continue;
        }
        f(in(th.i0, tw.i0), out, (1 - th.lambda) * (1 - tw.lambda));
        f(in(th.i0, tw.i1), out, (1 - th.lambda) * tw.lambda);
        f(in(th.i1, tw.i0), out, th.lambda * (1 - tw.lambda));
        f(in(th.i1, tw.i1), out, th.lambda * tw.lambda);
      }
}

}  // namespace

Vec upsample_fwd(const UpsampleParams& p, const Shape& x_shape, const Vec& x, const Shape& y_shape) {
  Vec y(static_cast<std::size_t>(shape_numel(y_shape)), 0.0);
  const std::int64_t c = x_shape[3];
  for_each_tap(p, x_shape, y_shape, [&](std::int64_t in, std::int64_t out, double w) {
    for (std::int64_t k = 0; k < c; ++k)
      y[static_cast<std::size_t>(out + k)] += w * x[static_cast<std::size_t>(in + k)];
  });
  return y;
}

Vec upsample_bwd(const UpsampleParams& p, const Shape& x_shape, const Shape& y_shape, const Vec& dy) {
  Vec dx(static_cast<std::size_t>(shape_numel(x_shape)), 0.0);
  const std::int64_t c = x_shape[3];
  for_each_tap(p, x_shape, y_shape, [&](std::int64_t in, std::int64_t out, double w) {
    for (std::int64_t k = 0; k < c; ++k)
      dx[static_cast<std::size_t>(in + k)] += w * dy[static_cast<std::size_t>(out + k)];
  });
  return dx;
}

}  // namespace gppf::kernels::ref
