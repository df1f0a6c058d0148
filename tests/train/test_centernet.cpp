// CenterNet targets and decoding: a box encoded then decoded from perfect maps comes back exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "src/train/centernet.hpp"

namespace gppf::train {
namespace {

TEST(CenterNet, EncodeThenDecodeRecoversBoxes) {
  const std::vector<std::vector<io::Box>> boxes{{{3, 5, 17, 13, 1}, {20, 2, 30, 28, 0}}};
  const int stride = 2, h = 16, w = 16, classes = 2;
  auto t = encode_centernet(boxes, h, w, stride, classes);
  EXPECT_EQ(t.num_objects, 2);
  // A perfect heat map: logit = log(p / (1 - p)), peaks exactly at 1 (a large logit).
  std::vector<float> logits(static_cast<std::size_t>(t.heatmap.numel()));
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const float p = std::clamp(t.heatmap.data_as<float>()[i], 1e-6f, 1 - 1e-6f);
    logits[i] = std::log(p / (1 - p));
  }
  const auto dets = decode_centernet(logits.data(), t.size.data_as<float>(), t.offset.data_as<float>(), h, w, classes,
                                     stride, 10, 0.5f);
  ASSERT_EQ(dets.size(), 2u);
  for (const auto& gt : boxes[0]) {
    bool found = false;
    for (const auto& d : dets)
      if (d.cls == gt.cls && std::abs(d.x1 - gt.x1) < 1e-4 && std::abs(d.y1 - gt.y1) < 1e-4 &&
          std::abs(d.x2 - gt.x2) < 1e-4 && std::abs(d.y2 - gt.y2) < 1e-4)
        found = true;
    EXPECT_TRUE(found) << gt.x1 << "," << gt.y1;
  }
}

// Perfect maps for a batch, decoded and scored as evaluation does: mAP and mAP@0.5 are exactly 1.
TEST(CenterNet, PerfectMapsScoreMapOne) {
  const std::vector<std::vector<io::Box>> boxes{{{3, 5, 17, 13, 1}, {20, 2, 30, 28, 0}}, {{40, 40, 60, 56, 2}}, {}};
  const int stride = 4, h = 16, w = 16, classes = 3;
  auto t = encode_centernet(boxes, h, w, stride, classes);
  DetectionEvaluator ev(classes);
  const std::size_t heat_per_image = static_cast<std::size_t>(h) * w * classes, reg_per_image = std::size_t(h) * w * 2;
  for (std::size_t b = 0; b < boxes.size(); ++b) {
    std::vector<float> logits(heat_per_image);
    for (std::size_t i = 0; i < logits.size(); ++i) {
      const float p = std::clamp(t.heatmap.data_as<float>()[b * heat_per_image + i], 1e-6f, 1 - 1e-6f);
      logits[i] = std::log(p / (1 - p));
    }
    ev.add_image(decode_centernet(logits.data(), t.size.data_as<float>() + b * reg_per_image,
                                  t.offset.data_as<float>() + b * reg_per_image, h, w, classes, stride, 10, 0.5f),
                 boxes[b]);
  }
  EXPECT_NEAR(ev.map50(), 1.0, 1e-12);
  EXPECT_NEAR(ev.map(), 1.0, 1e-12);
}

TEST(CenterNet, GaussianPeakAndWeights) {
  auto t = encode_centernet({{{0, 0, 8, 8, 0}}, {}}, 8, 8, 2, 1);
  const float* heat = t.heatmap.data_as<float>();
  // Centre (4, 4) px -> cell (2, 2) at stride 2; 1 there, smaller around, nothing in image 2.
  EXPECT_EQ(heat[2 * 8 + 2], 1.0f);
  EXPECT_LT(heat[2 * 8 + 3], 1.0f);
  EXPECT_GT(heat[2 * 8 + 3], 0.0f);
  float sum2 = 0, wsum = 0;
  for (int i = 0; i < 64; ++i) sum2 += heat[64 + i];
  for (std::int64_t i = 0; i < t.weight.numel(); ++i) wsum += t.weight.data_as<float>()[i];
  EXPECT_EQ(sum2, 0.0f);
  EXPECT_EQ(wsum, 2.0f);
  EXPECT_FLOAT_EQ(t.size.data_as<float>()[(2 * 8 + 2) * 2], 4.0f);
  // CenterNet's reference code for a 4x4 box at overlap 0.7: the third case gives
  // (-11.2 + sqrt(11.2^2 + 4 * 2.8 * 4.8)) / 2 = 1.0933 (it divides by 2, not 2a; we keep that).
  EXPECT_NEAR(gaussian_radius(4, 4), 1.0933, 1e-3);
}

TEST(CenterNet, DecodeSuppressesNonPeaks) {
  std::vector<float> heat(9, -10.0f), size(18, 2.0f), off(18, 0.5f);
  heat[4] = 5.0f;  // centre
  heat[5] = 4.0f;  // neighbour, not a peak
  const auto dets = decode_centernet(heat.data(), size.data(), off.data(), 3, 3, 1, 4, 10, 0.1f);
  ASSERT_EQ(dets.size(), 1u);
  EXPECT_NEAR(dets[0].x1, (1.5f - 1.0f) * 4, 1e-5);
  EXPECT_NEAR(dets[0].score, 1 / (1 + std::exp(-5.0f)), 1e-6);
}

}  // namespace
}  // namespace gppf::train
