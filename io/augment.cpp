#include "io/augment.hpp"

#include <algorithm>
#include <cmath>

namespace gppf::io {

Window plan_window(const AugmentConfig& aug, int src_h, int src_w, int out_h, int out_w, Rng& rng) {
  Window win{0, 0, double(src_w), double(src_h), false, out_h, out_w};
  if (!aug.enabled) return win;
  if (aug.crop_area_min < 1.0 || aug.crop_area_max < 1.0) {
    const double area = double(src_w) * src_h;
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double a = area * rng.uniform(aug.crop_area_min, aug.crop_area_max);
      const double r = std::exp(rng.uniform(std::log(aug.crop_ratio_min), std::log(aug.crop_ratio_max)));
      const double cw = std::sqrt(a * r), ch = std::sqrt(a / r);
      if (cw <= src_w && ch <= src_h) {
        win.w = cw;
        win.h = ch;
        win.x0 = rng.uniform(0.0, src_w - cw);
        win.y0 = rng.uniform(0.0, src_h - ch);
        break;
      }
    }
  }
  if (aug.scale_min != 1.0 || aug.scale_max != 1.0) {
    const double s = rng.uniform(aug.scale_min, aug.scale_max);
    const double nw = win.w / s, nh = win.h / s;
    win.x0 += rng.uniform() * (win.w - nw);
    win.y0 += rng.uniform() * (win.h - nh);
    win.w = nw;
    win.h = nh;
  }
  win.flip = aug.hflip > 0 && rng.uniform() < aug.hflip;
  return win;
}

namespace {

// Source x of output column ox (pixel centres at i + 0.5).
inline double src_x(const Window& win, int ox) {
  const double t = (ox + 0.5) * win.w / win.out_w;
  return win.flip ? win.x0 + win.w - t : win.x0 + t;
}
inline double src_y(const Window& win, int oy) { return win.y0 + (oy + 0.5) * win.h / win.out_h; }

}  // namespace

void resample_image(const std::uint8_t* src, int h, int w, int c, const Window& win, float fill, float* dst) {
  std::vector<int> x0(static_cast<std::size_t>(win.out_w)), x1(x0.size());
  std::vector<float> fx(x0.size());
  std::vector<char> xin(x0.size());
  for (int ox = 0; ox < win.out_w; ++ox) {
    const double x = src_x(win, ox);
    xin[ox] = x >= 0 && x < w;
    const double p = std::clamp(x - 0.5, 0.0, double(w - 1));
    x0[ox] = static_cast<int>(std::floor(p));
    x1[ox] = std::min(x0[ox] + 1, w - 1);
    fx[ox] = static_cast<float>(p - x0[ox]);
  }
  for (int oy = 0; oy < win.out_h; ++oy) {
    const double y = src_y(win, oy);
    float* out = dst + static_cast<std::size_t>(oy) * win.out_w * c;
    if (y < 0 || y >= h) {
      std::fill(out, out + static_cast<std::size_t>(win.out_w) * c, fill);
      continue;
    }
    const double q = std::clamp(y - 0.5, 0.0, double(h - 1));
    const int y0 = static_cast<int>(std::floor(q)), y1 = std::min(y0 + 1, h - 1);
    const float fy = static_cast<float>(q - y0);
    const std::uint8_t* r0 = src + static_cast<std::size_t>(y0) * w * c;
    const std::uint8_t* r1 = src + static_cast<std::size_t>(y1) * w * c;
    for (int ox = 0; ox < win.out_w; ++ox) {
      float* o = out + static_cast<std::size_t>(ox) * c;
      if (!xin[ox]) {
        for (int k = 0; k < c; ++k) o[k] = fill;
        continue;
      }
      const int a = x0[ox] * c, b = x1[ox] * c;
      const float u = fx[ox];
      for (int k = 0; k < c; ++k) {
        const float top = r0[a + k] + u * (r0[b + k] - r0[a + k]);
        const float bot = r1[a + k] + u * (r1[b + k] - r1[a + k]);
        o[k] = top + fy * (bot - top);
      }
    }
  }
}

void resample_mask(const std::uint8_t* src, int h, int w, const Window& win, std::int32_t* dst) {
  for (int oy = 0; oy < win.out_h; ++oy) {
    const double y = src_y(win, oy);
    for (int ox = 0; ox < win.out_w; ++ox) {
      const double x = src_x(win, ox);
      std::int32_t v = 255;
      if (x >= 0 && x < w && y >= 0 && y < h) v = src[static_cast<std::size_t>(y) * w + static_cast<std::size_t>(x)];
      dst[static_cast<std::size_t>(oy) * win.out_w + ox] = v;
    }
  }
}

std::vector<Box> transform_boxes(const std::vector<Box>& boxes, const Window& win, double min_visible) {
  std::vector<Box> out;
  const double sx = win.out_w / win.w, sy = win.out_h / win.h;
  for (const Box& b : boxes) {
    double x1 = (b.x1 - win.x0) * sx, x2 = (b.x2 - win.x0) * sx;
    const double y1 = (b.y1 - win.y0) * sy, y2 = (b.y2 - win.y0) * sy;
    if (win.flip) {
      const double t = x1;
      x1 = win.out_w - x2;
      x2 = win.out_w - t;
    }
    const double area = (x2 - x1) * (y2 - y1);
    const double cx1 = std::clamp(x1, 0.0, double(win.out_w)), cx2 = std::clamp(x2, 0.0, double(win.out_w));
    const double cy1 = std::clamp(y1, 0.0, double(win.out_h)), cy2 = std::clamp(y2, 0.0, double(win.out_h));
    const double visible = std::max(0.0, cx2 - cx1) * std::max(0.0, cy2 - cy1);
    if (area <= 0 || visible <= 0 || visible < min_visible * area) continue;
    out.push_back({float(cx1), float(cy1), float(cx2), float(cy2), b.cls});
  }
  return out;
}

void colour_jitter(const AugmentConfig& aug, int pixels, int c, Rng& rng, float* px) {
  const std::size_t n = static_cast<std::size_t>(pixels) * c;
  if (aug.brightness > 0) {
    const float f = static_cast<float>(rng.uniform(1 - aug.brightness, 1 + aug.brightness));
    for (std::size_t i = 0; i < n; ++i) px[i] *= f;
  }
  if (aug.contrast > 0) {
    const float f = static_cast<float>(rng.uniform(1 - aug.contrast, 1 + aug.contrast));
    double mean = 0;
    for (std::size_t i = 0; i < n; ++i) mean += px[i];
    const float m = static_cast<float>(mean / std::max<std::size_t>(n, 1));
    for (std::size_t i = 0; i < n; ++i) px[i] = m + f * (px[i] - m);
  }
  if (aug.saturation > 0 && c >= 3) {
    const float f = static_cast<float>(rng.uniform(1 - aug.saturation, 1 + aug.saturation));
    for (int p = 0; p < pixels; ++p) {
      float* q = px + static_cast<std::size_t>(p) * c;
      const float gray = 0.299f * q[0] + 0.587f * q[1] + 0.114f * q[2];
      for (int k = 0; k < 3; ++k) q[k] = gray + f * (q[k] - gray);
    }
  }
  for (std::size_t i = 0; i < n; ++i) px[i] = std::clamp(px[i], 0.0f, 255.0f);
}

}  // namespace gppf::io
