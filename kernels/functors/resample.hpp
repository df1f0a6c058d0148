#pragma once
// Upsampling index maths and kernels for host and CUDA (see kernels/resample.hpp for the semantics).
#include <cmath>
#include <cstdint>

#include "kernels/functors/elementwise.hpp"

namespace gppf::kernels {

struct ResampleGeom {
  std::int64_t n = 0, ih = 0, iw = 0, oh = 0, ow = 0, c = 0;
};

// Nearest: the source of output index d, floor(d * in / out), exact in integers.
GPPF_HD GPPF_INLINE std::int64_t nearest_src(std::int64_t d, std::int64_t in, std::int64_t out) { return d * in / out; }
// The outputs whose source is i: [ceil(i * out / in), ceil((i + 1) * out / in)).
GPPF_HD GPPF_INLINE std::int64_t nearest_first(std::int64_t i, std::int64_t in, std::int64_t out) {
  return (i * out + in - 1) / in;
}

// Bilinear, one axis: output d reads (1 - lambda) * x[i0] + lambda * x[i1] (PyTorch's f32 maths).
struct LinearTap {
  std::int64_t i0, i1;
  float lambda;
};
GPPF_HD GPPF_INLINE LinearTap linear_tap(std::int64_t d, std::int64_t in, std::int64_t out) {
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  float src = scale * (static_cast<float>(d) + 0.5f) - 0.5f;
  if (src < 0.0f) src = 0.0f;
  std::int64_t i0 = static_cast<std::int64_t>(src);
  if (i0 > in - 1) i0 = in - 1;
  const std::int64_t i1 = i0 < in - 1 ? i0 + 1 : i0;
  return {i0, i1, src - static_cast<float>(i0)};
}
// The weight with which output d reads input i (0 when it does not).
GPPF_HD GPPF_INLINE float linear_weight(std::int64_t d, std::int64_t i, std::int64_t in, std::int64_t out) {
  const LinearTap t = linear_tap(d, in, out);
  return (t.i0 == i ? 1.0f - t.lambda : 0.0f) + (t.i1 == i ? t.lambda : 0.0f);
}
// A window of outputs [first, last) that holds every d reading input i (with a margin for rounding;
// linear_weight sorts out the rest).
GPPF_HD GPPF_INLINE void linear_window(std::int64_t i, std::int64_t in, std::int64_t out, std::int64_t& first,
                                       std::int64_t& last) {
  const float r = static_cast<float>(out) / static_cast<float>(in);
  first = static_cast<std::int64_t>(floorf((static_cast<float>(i) - 0.5f) * r - 0.5f)) - 1;
  last = static_cast<std::int64_t>(ceilf((static_cast<float>(i) + 1.5f) * r - 0.5f)) + 2;
  if (first < 0) first = 0;
  if (last > out) last = out;
}

// One thread per output element (the CUDA forward).
template <class T>
struct UpsampleFwdFunctor {
  const T* x;
  T* y;
  ResampleGeom g;
  bool bilinear;
  GPPF_HD void operator()(std::int64_t i) const {
    const std::int64_t c = i % g.c;
    std::int64_t t = i / g.c;
    const std::int64_t ow = t % g.ow;
    t /= g.ow;
    const std::int64_t oh = t % g.oh;
    const std::int64_t n = t / g.oh;
    const T* img = x + n * g.ih * g.iw * g.c + c;
    if (!bilinear) {
      y[i] = img[(nearest_src(oh, g.ih, g.oh) * g.iw + nearest_src(ow, g.iw, g.ow)) * g.c];
      return;
    }
    const LinearTap th = linear_tap(oh, g.ih, g.oh), tw = linear_tap(ow, g.iw, g.ow);
    const float top = (1.0f - tw.lambda) * to_f32(img[(th.i0 * g.iw + tw.i0) * g.c]) +
                      tw.lambda * to_f32(img[(th.i0 * g.iw + tw.i1) * g.c]);
    const float bottom = (1.0f - tw.lambda) * to_f32(img[(th.i1 * g.iw + tw.i0) * g.c]) +
                         tw.lambda * to_f32(img[(th.i1 * g.iw + tw.i1) * g.c]);
    y[i] = from_f32<T>((1.0f - th.lambda) * top + th.lambda * bottom);
  }
};

// One thread per input element, gathering from the outputs it fed (the CUDA backward).
template <class T>
struct UpsampleBwdFunctor {
  const T* dy;
  T* dx;
  ResampleGeom g;
  bool bilinear;
  bool accumulate;
  GPPF_HD void operator()(std::int64_t i) const {
    const std::int64_t c = i % g.c;
    std::int64_t t = i / g.c;
    const std::int64_t iw = t % g.iw;
    t /= g.iw;
    const std::int64_t ih = t % g.ih;
    const std::int64_t n = t / g.ih;
    const T* img = dy + n * g.oh * g.ow * g.c + c;
    float acc = 0.0f;
    if (!bilinear) {
      const std::int64_t h1 = nearest_first(ih + 1, g.ih, g.oh), w1 = nearest_first(iw + 1, g.iw, g.ow);
      for (std::int64_t oh = nearest_first(ih, g.ih, g.oh); oh < h1; ++oh)
        for (std::int64_t ow = nearest_first(iw, g.iw, g.ow); ow < w1; ++ow) acc += to_f32(img[(oh * g.ow + ow) * g.c]);
    } else {
      std::int64_t h0, h1, w0, w1;
      linear_window(ih, g.ih, g.oh, h0, h1);
      linear_window(iw, g.iw, g.ow, w0, w1);
      for (std::int64_t oh = h0; oh < h1; ++oh) {
        const float wh = linear_weight(oh, ih, g.ih, g.oh);
        if (wh == 0.0f) continue;
        for (std::int64_t ow = w0; ow < w1; ++ow) {
          const float ww = linear_weight(ow, iw, g.iw, g.ow);
          if (ww != 0.0f) acc += wh * ww * to_f32(img[(oh * g.ow + ow) * g.c]);
        }
      }
    }
    write_grad(dx, i, acc, accumulate);
  }
};

}  // namespace gppf::kernels
