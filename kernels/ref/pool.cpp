#include "kernels/ref/pool.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace gppf::kernels::ref {
namespace {

// Visits every (output, input) pair of every window with the divisor average pooling uses.
template <class F>
void for_each_window(const Pool2dParams& p, const Shape& xs, F&& f) {
  const Shape ys = pool2d_output_shape(p, xs);
  const std::int64_t n = xs[0], h = xs[1], w = xs[2], c = xs[3], oh = ys[1], ow = ys[2];
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t oy = 0; oy < oh; ++oy)
      for (std::int64_t ox = 0; ox < ow; ++ox)
        for (std::int64_t ch = 0; ch < c; ++ch) {
          const std::int64_t out = ((b * oh + oy) * ow + ox) * c + ch;
          std::vector<std::int64_t> inputs;
          for (int ky = 0; ky < p.kernel_h; ++ky)
            for (int kx = 0; kx < p.kernel_w; ++kx) {
              const std::int64_t iy = oy * p.stride_h - p.pad_h + ky, ix = ox * p.stride_w - p.pad_w + kx;
              if (iy >= 0 && iy < h && ix >= 0 && ix < w) inputs.push_back(((b * h + iy) * w + ix) * c + ch);
            }
          const double divisor = p.count_include_pad ? double(p.kernel_h) * p.kernel_w : double(inputs.size());
          f(out, inputs, divisor);
        }
}

void check_size(const char* op, const Shape& s, const std::vector<double>& v) {
  GPPF_CHECK(shape_numel(s) == static_cast<std::int64_t>(v.size()), op, ": shape ", shape_str(s), " needs ",
             shape_numel(s), " values, got ", v.size());
}

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

}  // namespace

std::vector<double> maxpool2d_fwd(const Pool2dParams& p, const Shape& xs, const std::vector<double>& x) {
  check_size("ref::maxpool2d_fwd", xs, x);
  std::vector<double> y(at(shape_numel(pool2d_output_shape(p, xs))));
  for_each_window(p, xs, [&](std::int64_t out, const std::vector<std::int64_t>& in, double) {
    double best = x[at(in[0])];
    for (std::int64_t i : in) best = std::max(best, x[at(i)]);
    y[at(out)] = best;
  });
  return y;
}

std::vector<double> maxpool2d_bwd(const Pool2dParams& p, const Shape& xs, const std::vector<double>& x,
                                  const std::vector<double>& dy) {
  check_size("ref::maxpool2d_bwd", xs, x);
  check_size("ref::maxpool2d_bwd", pool2d_output_shape(p, xs), dy);
  std::vector<double> dx(x.size(), 0.0);
  for_each_window(p, xs, [&](std::int64_t out, const std::vector<std::int64_t>& in, double) {
    std::int64_t best = in[0];
    for (std::int64_t i : in)
      if (x[at(i)] > x[at(best)]) best = i;
    dx[at(best)] += dy[at(out)];
  });
  return dx;
}

std::vector<double> avgpool2d_fwd(const Pool2dParams& p, const Shape& xs, const std::vector<double>& x) {
  check_size("ref::avgpool2d_fwd", xs, x);
  std::vector<double> y(at(shape_numel(pool2d_output_shape(p, xs))));
  for_each_window(p, xs, [&](std::int64_t out, const std::vector<std::int64_t>& in, double divisor) {
    double sum = 0.0;
    for (std::int64_t i : in) sum += x[at(i)];
    y[at(out)] = sum / divisor;
  });
  return y;
}

std::vector<double> avgpool2d_bwd(const Pool2dParams& p, const Shape& xs, const std::vector<double>& dy) {
  check_size("ref::avgpool2d_bwd", pool2d_output_shape(p, xs), dy);
  std::vector<double> dx(at(shape_numel(xs)), 0.0);
  for_each_window(p, xs, [&](std::int64_t out, const std::vector<std::int64_t>& in, double divisor) {
    for (std::int64_t i : in) dx[at(i)] += dy[at(out)] / divisor;
  });
  return dx;
}

std::vector<double> global_avgpool_fwd(const Shape& xs, const std::vector<double>& x) {
  check_size("ref::global_avgpool_fwd", xs, x);
  const std::int64_t n = xs[0], hw = xs[1] * xs[2], c = xs[3];
  std::vector<double> y(at(n * c), 0.0);
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t q = 0; q < hw; ++q)
      for (std::int64_t ch = 0; ch < c; ++ch) y[at(b * c + ch)] += x[at((b * hw + q) * c + ch)] / double(hw);
  return y;
}

std::vector<double> global_avgpool_bwd(const Shape& xs, const std::vector<double>& dy) {
  const std::int64_t n = xs[0], hw = xs[1] * xs[2], c = xs[3];
  check_size("ref::global_avgpool_bwd", {n, c}, dy);
  std::vector<double> dx(at(shape_numel(xs)));
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t q = 0; q < hw; ++q)
      for (std::int64_t ch = 0; ch < c; ++ch) dx[at((b * hw + q) * c + ch)] = dy[at(b * c + ch)] / double(hw);
  return dx;
}

}  // namespace gppf::kernels::ref
