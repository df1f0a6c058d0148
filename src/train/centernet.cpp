#include "src/train/centernet.hpp"

#include <algorithm>
#include <cmath>

namespace gppf::train {

float gaussian_radius(float height, float width, float min_overlap) {
  // The three cases of CenterNet's radius (both corners inside, both outside, one of each).
  const float a1 = 1, b1 = height + width, c1 = width * height * (1 - min_overlap) / (1 + min_overlap);
  const float r1 = (b1 + std::sqrt(b1 * b1 - 4 * a1 * c1)) / 2;
  const float a2 = 4, b2 = 2 * (height + width), c2 = (1 - min_overlap) * width * height;
  const float r2 = (b2 + std::sqrt(b2 * b2 - 4 * a2 * c2)) / 2;
  const float a3 = 4 * min_overlap, b3 = -2 * min_overlap * (height + width), c3 = (min_overlap - 1) * width * height;
  const float r3 = (b3 + std::sqrt(b3 * b3 - 4 * a3 * c3)) / 2;
  return std::min({r1, r2, r3});
}

CenterNetTargets encode_centernet(const std::vector<std::vector<io::Box>>& boxes, int out_h, int out_w, int stride,
                                  int num_classes, bool pinned) {
  const auto n = static_cast<std::int64_t>(boxes.size());
  auto zeros = [&](const Shape& shape) {
    Tensor z = Tensor::empty(shape, DType::F32, Device::host(), pinned);
    z.zero_();
    return z;
  };
  CenterNetTargets t;
  t.heatmap = zeros({n, out_h, out_w, num_classes});
  t.size = zeros({n, out_h, out_w, 2});
  t.offset = zeros({n, out_h, out_w, 2});
  t.weight = zeros({n, out_h, out_w, 2});
  float* heat = t.heatmap.data_as<float>();
  float* size = t.size.data_as<float>();
  float* off = t.offset.data_as<float>();
  float* wt = t.weight.data_as<float>();
  const float s = static_cast<float>(stride);
  for (std::int64_t b = 0; b < n; ++b) {
    for (const io::Box& box : boxes[static_cast<std::size_t>(b)]) {
      GPPF_CHECK(box.cls >= 0 && box.cls < num_classes, "detection target: class ", box.cls, " outside [0, ",
                 num_classes, ")");
      const float bw = (box.x2 - box.x1) / s, bh = (box.y2 - box.y1) / s;
      if (bw <= 0 || bh <= 0) continue;
      const float cx = (box.x1 + box.x2) / 2 / s, cy = (box.y1 + box.y2) / 2 / s;
      const int ix = std::clamp(static_cast<int>(std::floor(cx)), 0, out_w - 1);
      const int iy = std::clamp(static_cast<int>(std::floor(cy)), 0, out_h - 1);
      const int radius = std::max(0, static_cast<int>(gaussian_radius(std::ceil(bh), std::ceil(bw))));
      const float sigma = (2 * radius + 1) / 6.0f;
      for (int y = std::max(0, iy - radius); y <= std::min(out_h - 1, iy + radius); ++y)
        for (int x = std::max(0, ix - radius); x <= std::min(out_w - 1, ix + radius); ++x) {
          const float g =
              std::exp(-static_cast<float>((x - ix) * (x - ix) + (y - iy) * (y - iy)) / (2 * sigma * sigma));
          float& v = heat[((b * out_h + y) * out_w + x) * num_classes + box.cls];
          v = std::max(v, g);
        }
      heat[((b * out_h + iy) * out_w + ix) * num_classes + box.cls] = 1.0f;
      const std::int64_t cell = ((b * out_h + iy) * out_w + ix) * 2;
      size[cell] = bw;
      size[cell + 1] = bh;
      off[cell] = cx - static_cast<float>(ix);
      off[cell + 1] = cy - static_cast<float>(iy);
      wt[cell] = wt[cell + 1] = 1.0f;
      ++t.num_objects;
    }
  }
  return t;
}

std::vector<Detection> decode_centernet(const float* heat_logits, const float* size, const float* offset, int out_h,
                                        int out_w, int num_classes, int stride, int k, float min_score) {
  auto at = [&](int y, int x, int c) {
    return heat_logits[(static_cast<std::int64_t>(y) * out_w + x) * num_classes + c];
  };
  std::vector<Detection> dets;
  for (int y = 0; y < out_h; ++y)
    for (int x = 0; x < out_w; ++x)
      for (int c = 0; c < num_classes; ++c) {
        const float v = at(y, x, c);
        bool peak = true;
        // 3x3 max pooling as non-maximum suppression; ties keep the first cell in scan order.
        for (int dy = -1; dy <= 1 && peak; ++dy)
          for (int dx = -1; dx <= 1 && peak; ++dx) {
            const int yy = y + dy, xx = x + dx;
            if ((dy == 0 && dx == 0) || yy < 0 || xx < 0 || yy >= out_h || xx >= out_w) continue;
            const float u = at(yy, xx, c);
            if (u > v || (u == v && (dy < 0 || (dy == 0 && dx < 0)))) peak = false;
          }
        if (!peak) continue;
        const float score = 1.0f / (1.0f + std::exp(-v));
        if (score < min_score) continue;
        const std::int64_t cell = (static_cast<std::int64_t>(y) * out_w + x) * 2;
        const float cx = static_cast<float>(x) + offset[cell], cy = static_cast<float>(y) + offset[cell + 1];
        const float w = std::max(0.0f, size[cell]), h = std::max(0.0f, size[cell + 1]);
        const float s = static_cast<float>(stride);
        dets.push_back({(cx - w / 2) * s, (cy - h / 2) * s, (cx + w / 2) * s, (cy + h / 2) * s, score, c});
      }
  std::stable_sort(dets.begin(), dets.end(), [](const Detection& a, const Detection& b) { return a.score > b.score; });
  if (static_cast<int>(dets.size()) > k) dets.resize(static_cast<std::size_t>(k));
  return dets;
}

}  // namespace gppf::train
