#include "io/coco_mask.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/error.hpp"

namespace gppf::io {

std::vector<std::uint8_t> rle_decode(const std::vector<std::uint32_t>& counts, int h, int w) {
  const std::uint64_t n = static_cast<std::uint64_t>(h) * w;
  std::vector<std::uint8_t> out(n, 0);
  std::uint64_t pos = 0;
  std::uint8_t v = 0;
  for (std::uint32_t c : counts) {
    GPPF_CHECK(pos + c <= n, "RLE counts cover more than the ", h, "x", w, " mask");
    if (v)
      for (std::uint64_t i = pos; i < pos + c; ++i) out[(i % h) * w + i / h] = 1;  // column-major
    pos += c;
    v ^= 1;
  }
  GPPF_CHECK(pos == n, "RLE counts cover ", pos, " of the ", n, " pixels of a ", h, "x", w, " mask");
  return out;
}

std::vector<std::uint32_t> rle_encode(const std::uint8_t* mask, int h, int w) {
  std::vector<std::uint32_t> counts;
  std::uint8_t v = 0;
  std::uint32_t run = 0;
  for (int x = 0; x < w; ++x)
    for (int y = 0; y < h; ++y) {
      const std::uint8_t p = mask[static_cast<std::size_t>(y) * w + x] ? 1 : 0;
      if (p != v) {
        counts.push_back(run);
        run = 0;
        v = p;
      }
      ++run;
    }
  counts.push_back(run);
  return counts;
}

std::vector<std::uint32_t> rle_from_string(const std::string& s) {
  std::vector<std::uint32_t> cnts;
  std::size_t p = 0;
  while (p < s.size()) {
    std::int64_t x = 0;
    int k = 0;
    bool more = true;
    while (more) {
      GPPF_CHECK(p < s.size(), "compressed RLE string ends inside a number");
      // Seven characters hold 35 bits, enough for a 32-bit run and its sign; more would shift past 64.
      GPPF_CHECK(k < 7, "compressed RLE string has a number longer than 7 characters");
      const std::int64_t c = static_cast<std::int64_t>(s[p]) - 48;
      GPPF_CHECK(c >= 0 && c < 64, "compressed RLE string has a bad character '", s[p], "'");
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
      if (!more && (c & 0x10)) x |= -(std::int64_t(1) << (5 * k));
    }
    if (cnts.size() > 2) x += cnts[cnts.size() - 2];
    GPPF_CHECK(x >= 0 && x <= 0xffffffffLL, "compressed RLE string decodes to a negative run");
    cnts.push_back(static_cast<std::uint32_t>(x));
  }
  return cnts;
}

std::string rle_to_string(const std::vector<std::uint32_t>& counts) {
  std::string s;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    std::int64_t x = counts[i];
    if (i > 2) x -= counts[i - 2];
    bool more = true;
    while (more) {
      char c = static_cast<char>(x & 0x1f);
      x >>= 5;
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s += static_cast<char>(c + 48);
    }
  }
  return s;
}

std::vector<std::uint32_t> rle_from_polygon(const std::vector<double>& xy, int h, int w) {
  // pycocotools rleFrPoly: upsample by 5, walk the boundary, keep the points where it crosses a
  // pixel column, and turn those y-boundaries into runs.
  const std::size_t k = xy.size() / 2;
  GPPF_CHECK(k >= 3 && xy.size() % 2 == 0, "polygon needs at least 3 points (got ", xy.size(), " numbers)");
  for (double v : xy) GPPF_CHECK(std::isfinite(v), "polygon with a NaN or infinite coordinate");
  // Within one image size of the image: the walk below is as long as the scaled outline, and a
  // coordinate beyond int's range would be undefined to convert (fuzzing).
  for (std::size_t j = 0; j < k; ++j)
    GPPF_CHECK(std::fabs(xy[2 * j]) <= 2.0 * w && std::fabs(xy[2 * j + 1]) <= 2.0 * h, "polygon point (", xy[2 * j],
               ", ", xy[2 * j + 1], ") lies far outside the ", w, "x", h, " image");
  const double scale = 5;
  std::vector<int> x(k + 1), y(k + 1);
  for (std::size_t j = 0; j < k; ++j) {
    x[j] = static_cast<int>(scale * xy[2 * j] + .5);
    y[j] = static_cast<int>(scale * xy[2 * j + 1] + .5);
  }
  x[k] = x[0];
  y[k] = y[0];
  std::vector<int> u, v;
  for (std::size_t j = 0; j < k; ++j) {
    int xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
    const int dx = std::abs(xe - xs), dy = std::abs(ys - ye);
    const bool flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      std::swap(xs, xe);
      std::swap(ys, ye);
    }
    const double s = dx >= dy ? (dx == 0 ? 0.0 : double(ye - ys) / dx) : double(xe - xs) / dy;
    if (dx >= dy) {
      for (int d = 0; d <= dx; ++d) {
        const int t = flip ? dx - d : d;
        u.push_back(t + xs);
        v.push_back(static_cast<int>(ys + s * t + .5));
      }
    } else {
      for (int d = 0; d <= dy; ++d) {
        const int t = flip ? dy - d : d;
        v.push_back(t + ys);
        u.push_back(static_cast<int>(xs + s * t + .5));
      }
    }
  }
  std::vector<std::uint32_t> a;
  for (std::size_t j = 1; j < u.size(); ++j) {
    if (u[j] == u[j - 1]) continue;
    double xd = u[j] < u[j - 1] ? u[j] : u[j] - 1;
    xd = (xd + .5) / scale - .5;
    if (std::floor(xd) != xd || xd < 0 || xd > w - 1) continue;
    double yd = v[j] < v[j - 1] ? v[j] : v[j - 1];
    yd = (yd + .5) / scale - .5;
    yd = std::ceil(std::clamp(yd, 0.0, double(h)));
    a.push_back(static_cast<std::uint32_t>(static_cast<int>(xd) * h + static_cast<int>(yd)));
  }
  a.push_back(static_cast<std::uint32_t>(h * w));
  std::sort(a.begin(), a.end());
  std::uint32_t prev = 0;
  for (auto& t : a) {
    const std::uint32_t cur = t;
    t -= prev;
    prev = cur;
  }
  std::vector<std::uint32_t> b;
  std::size_t j = 0;
  b.push_back(a[j++]);
  while (j < a.size()) {
    if (a[j] > 0) {
      b.push_back(a[j++]);
    } else {
      ++j;
      if (j < a.size()) b.back() += a[j++];
    }
  }
  return b;
}

}  // namespace gppf::io
