#pragma once
// Pooling geometry and per-element pooling kernels. The CUDA backend launches the functors with one
// thread per output (forward) or per input (backward, as a gather: deterministic, no atomics); the
// host runs its own channel-vectorised loops and shares the geometry helpers.
#include <cstdint>

#include "kernels/functors/batchnorm.hpp"
#include "kernels/pool.hpp"

namespace gppf::kernels {

struct PoolGeom {
  std::int64_t n, h, w, c, oh, ow;
  int kh, kw, sh, sw, ph, pw;
  bool include_pad;
};

inline PoolGeom pool_geom(const Pool2dParams& p, const Shape& x) {
  const Shape y = pool2d_output_shape(p, x);
  return {x[0],
          x[1],
          x[2],
          x[3],
          y[1],
          y[2],
          p.kernel_h,
          p.kernel_w,
          p.stride_h,
          p.stride_w,
          p.pad_h,
          p.pad_w,
          p.count_include_pad};
}

// Input rows [lo, hi) under output row o (padding clipped away).
GPPF_HD GPPF_INLINE void pool_window(std::int64_t o, int k, int s, int pad, std::int64_t size, std::int64_t& lo,
                                     std::int64_t& hi) {
  lo = o * s - pad;
  hi = lo + k;
  if (lo < 0) lo = 0;
  if (hi > size) hi = size;
}

// Output rows [lo, hi) whose windows contain input row i.
GPPF_HD GPPF_INLINE void pool_outputs_of(std::int64_t i, int k, int s, int pad, std::int64_t out_size, std::int64_t& lo,
                                         std::int64_t& hi) {
  const std::int64_t first = i + pad - k + 1;  // windows starting at or after this row (in padded coords)
  lo = first <= 0 ? 0 : (first + s - 1) / s;
  hi = (i + pad) / s + 1;
  if (hi > out_size) hi = out_size;
}

GPPF_HD GPPF_INLINE float pool_avg_scale(const PoolGeom& g, std::int64_t h0, std::int64_t h1, std::int64_t w0,
                                         std::int64_t w1) {
  const std::int64_t count = g.include_pad ? static_cast<std::int64_t>(g.kh) * g.kw : (h1 - h0) * (w1 - w0);
  return 1.0f / static_cast<float>(count);
}

// Flat index of the first maximum (row-major window order, strict >) of window (n, oy, ox), channel c.
template <class T>
GPPF_HD GPPF_INLINE std::int64_t pool_argmax(const PoolGeom& g, const T* x, std::int64_t n, std::int64_t oy,
                                             std::int64_t ox, std::int64_t c) {
  std::int64_t h0, h1, w0, w1;
  pool_window(oy, g.kh, g.sh, g.ph, g.h, h0, h1);
  pool_window(ox, g.kw, g.sw, g.pw, g.w, w0, w1);
  std::int64_t best_i = ((n * g.h + h0) * g.w + w0) * g.c + c;
  float best = normpool::load(x[best_i]);
  for (std::int64_t hy = h0; hy < h1; ++hy)
    for (std::int64_t wx = w0; wx < w1; ++wx) {
      const std::int64_t i = ((n * g.h + hy) * g.w + wx) * g.c + c;
      const float v = normpool::load(x[i]);
      if (v > best) {
        best = v;
        best_i = i;
      }
    }
  return best_i;
}

// One output element of max (avg == false) or average pooling.
template <class T>
struct Pool2dFwdFunctor {
  PoolGeom g;
  const T* x;
  T* y;
  bool avg;
  GPPF_HD void operator()(std::int64_t i) const {
    const std::int64_t c = i % g.c;
    std::int64_t r = i / g.c;
    const std::int64_t ox = r % g.ow;
    r /= g.ow;
    const std::int64_t oy = r % g.oh;
    const std::int64_t n = r / g.oh;
    if (!avg) {
      y[i] = x[pool_argmax(g, x, n, oy, ox, c)];
      return;
    }
    std::int64_t h0, h1, w0, w1;
    pool_window(oy, g.kh, g.sh, g.ph, g.h, h0, h1);
    pool_window(ox, g.kw, g.sw, g.pw, g.w, w0, w1);
    float sum = 0.0f;
    for (std::int64_t hy = h0; hy < h1; ++hy)
      for (std::int64_t wx = w0; wx < w1; ++wx) sum += normpool::load(x[((n * g.h + hy) * g.w + wx) * g.c + c]);
    y[i] = normpool::store<T>(sum * pool_avg_scale(g, h0, h1, w0, w1));
  }
};

// One input element's gradient: the sum over the windows that contain it (max: only those whose
// first maximum it is).
template <class T>
struct Pool2dBwdFunctor {
  PoolGeom g;
  const T* x;  // max pooling only
  const T* dy;
  T* dx;
  bool avg;
  GPPF_HD void operator()(std::int64_t i) const {
    const std::int64_t c = i % g.c;
    std::int64_t r = i / g.c;
    const std::int64_t wx = r % g.w;
    r /= g.w;
    const std::int64_t hy = r % g.h;
    const std::int64_t n = r / g.h;
    std::int64_t oy0, oy1, ox0, ox1;
    pool_outputs_of(hy, g.kh, g.sh, g.ph, g.oh, oy0, oy1);
    pool_outputs_of(wx, g.kw, g.sw, g.pw, g.ow, ox0, ox1);
    float sum = 0.0f;
    for (std::int64_t oy = oy0; oy < oy1; ++oy)
      for (std::int64_t ox = ox0; ox < ox1; ++ox) {
        const float d = normpool::load(dy[((n * g.oh + oy) * g.ow + ox) * g.c + c]);
        if (avg) {
          std::int64_t h0, h1, w0, w1;
          pool_window(oy, g.kh, g.sh, g.ph, g.h, h0, h1);
          pool_window(ox, g.kw, g.sw, g.pw, g.w, w0, w1);
          sum += d * pool_avg_scale(g, h0, h1, w0, w1);
        } else if (pool_argmax(g, x, n, oy, ox, c) == i) {
          sum += d;
        }
      }
    dx[i] = normpool::store<T>(sum);
  }
};

// dx[n,h,w,c] = (accumulate ? dx : 0) + dy[n,c] * scale, scale = 1 / (H*W).
template <class T>
struct GlobalAvgPoolBwdFunctor {
  const T* dy;
  T* dx;
  std::int64_t hw, c;
  float scale;
  bool accumulate;
  GPPF_HD GPPF_INLINE void at(std::int64_t i, std::int64_t n, std::int64_t ch) const {
    float v = normpool::load(dy[n * c + ch]) * scale;
    if (accumulate) v += normpool::load(dx[i]);
    dx[i] = normpool::store<T>(v);
  }
  GPPF_HD void operator()(std::int64_t i) const { at(i, i / (hw * c), i % c); }
};

}  // namespace gppf::kernels
