// mAP and mIoU on cases computed by hand.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "src/train/metrics.hpp"
#include "src/train/network.hpp"

namespace gppf::train {
namespace {

TEST(DetectionMetrics, ApWithOneFalsePositiveBetweenTwoHits) {
  DetectionEvaluator ev(1);
  ev.add_image({{0, 0, 10, 10, 0.9f, 0}, {50, 50, 60, 60, 0.8f, 0}, {20, 20, 30, 30, 0.7f, 0}},
               {{0, 0, 10, 10, 0}, {20, 20, 30, 30, 0}});
  // precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; interpolated: 1 up to recall 0.5 (51 points),
  // 2/3 beyond (50 points).
  EXPECT_NEAR(ev.average_precision(0, 0.5), (51.0 + 50.0 * 2.0 / 3.0) / 101.0, 1e-12);
  EXPECT_NEAR(ev.map50(), (51.0 + 50.0 * 2.0 / 3.0) / 101.0, 1e-12);
}

TEST(DetectionMetrics, CocoMapCountsThresholds) {
  DetectionEvaluator ev(2);
  // IoU 0.65: a hit at 0.50, 0.55, 0.60 and a miss from 0.65 on -> 3/10 for class 0.
  ev.add_image({{0, 0, 10, 6.5f, 0.9f, 0}, {0, 0, 4, 4, 0.5f, 1}}, {{0, 0, 10, 10, 0}, {0, 0, 4, 4, 1}});
  EXPECT_NEAR(ev.average_precision(0, 0.5), 1.0, 1e-12);
  EXPECT_NEAR(ev.average_precision(0, 0.7), 0.0, 1e-12);
  EXPECT_NEAR(ev.map50(), 1.0, 1e-12);
  EXPECT_NEAR(ev.map(), (0.3 + 1.0) / 2, 1e-12);
}

TEST(DetectionMetrics, DuplicatesAndWrongClassesAndMissingClasses) {
  DetectionEvaluator ev(3);
  // Two detections of the same object: the second is a false positive. A detection of class 1 on a
  // class-0 object is a false positive of class 1. Class 2 has no ground truth: not averaged.
  ev.add_image({{0, 0, 10, 10, 0.9f, 0}, {0, 0, 10, 10, 0.8f, 0}, {0, 0, 10, 10, 0.7f, 1}}, {{0, 0, 10, 10, 0}});
  ev.add_image({}, {{5, 5, 9, 9, 1}});
  EXPECT_NEAR(ev.average_precision(0, 0.5), 1.0, 1e-12);
  EXPECT_NEAR(ev.average_precision(1, 0.5), 0.0, 1e-12);
  EXPECT_EQ(ev.average_precision(2, 0.5), -1.0);
  EXPECT_NEAR(ev.map50(), 0.5, 1e-12);
  EXPECT_NEAR(box_iou(0, 0, 2, 2, 1, 1, 3, 3), 1.0 / 7.0, 1e-7);
}

TEST(DetectionMetrics, PerfectDetectionsScoreOne) {
  DetectionEvaluator ev(2);
  ev.add_image({{1, 2, 11, 12, 0.9f, 0}, {20, 20, 25, 30, 0.3f, 1}}, {{1, 2, 11, 12, 0}, {20, 20, 25, 30, 1}});
  ev.add_image({{5, 5, 9, 9, 0.6f, 1}}, {{5, 5, 9, 9, 1}});
  EXPECT_DOUBLE_EQ(ev.map50(), 1.0);
  EXPECT_DOUBLE_EQ(ev.map(), 1.0);
}

// IoU thresholds are 0.50, 0.55, ..., 0.95; a detection with IoU u is a hit at the thresholds <= u.
TEST(DetectionMetrics, ShiftedBoxesGiveTheCountOfThresholdsBelowTheirIou) {
  {
    DetectionEvaluator ev(1);
    // shifted right by 2 px: IoU 80 / 120 = 0.667, a hit at 0.50..0.65 (4 of 10 thresholds)
    ev.add_image({{2, 0, 12, 10, 0.9f, 0}}, {{0, 0, 10, 10, 0}});
    EXPECT_NEAR(box_iou(2, 0, 12, 10, 0, 0, 10, 10), 2.0 / 3.0, 1e-6);
    EXPECT_DOUBLE_EQ(ev.map50(), 1.0);
    EXPECT_NEAR(ev.map(), 4.0 / 10.0, 1e-12);
  }
  {
    DetectionEvaluator ev(1);
    // A: IoU 0.92, score 0.9; B: IoU 0.62, score 0.8. Both hit at 0.50..0.60 (AP 1, 3 thresholds);
    // only A at 0.65..0.90 (precision 1 up to recall 1/2, then a false positive: AP 51/101, 6
    // thresholds); none at 0.95 (AP 0).
    ev.add_image({{0, 0, 10, 9.2f, 0.9f, 0}}, {{0, 0, 10, 10, 0}});
    ev.add_image({{0, 0, 10, 6.2f, 0.8f, 0}}, {{0, 0, 10, 10, 0}});
    EXPECT_DOUBLE_EQ(ev.map50(), 1.0);
    EXPECT_NEAR(ev.map(), (3 * 1.0 + 6 * 51.0 / 101.0) / 10.0, 1e-12);
  }
}

TEST(SegmentationMetrics, ConfusionByHand) {
  SegmentationEvaluator ev(3);
  ev.add(std::vector<std::int32_t>{0, 1, 1, 2, 0}, std::vector<std::uint8_t>{0, 1, 2, 2, 255});
  // IoU: class 0 1/1, class 1 1/2, class 2 1/2; the 255 pixel is ignored.
  EXPECT_NEAR(ev.miou(), (1.0 + 0.5 + 0.5) / 3, 1e-12);
  EXPECT_NEAR(ev.miou_foreground(), (0.5 + 0.5) / 2, 1e-12);
  EXPECT_NEAR(ev.pixel_accuracy(), 0.75, 1e-12);
  EXPECT_THROW(ev.add(std::vector<std::int32_t>{3}, std::vector<std::uint8_t>{0}), Error);
}

TEST(SegmentationMetrics, AbsentClassesAreNotAveraged) {
  SegmentationEvaluator ev(4);
  ev.add(std::vector<std::int32_t>{0, 0, 1, 1}, std::vector<std::uint8_t>{0, 0, 1, 0});
  // class 0: tp 2, union 3; class 1: tp 1, union 2; classes 2, 3 absent.
  EXPECT_NEAR(ev.miou(), (2.0 / 3 + 0.5) / 2, 1e-12);
  EXPECT_NEAR(ev.miou_foreground(), 0.5, 1e-12);
}

// All background predicted on a mostly-background mask: mIoU over all classes still looks halfway
// good, the foreground mIoU says that no object was found.
TEST(SegmentationMetrics, BackgroundOnlyPredictionHasZeroForegroundIou) {
  SegmentationEvaluator ev(3);
  std::vector<std::uint8_t> truth(100, 0);
  for (int i = 0; i < 10; ++i) truth[static_cast<std::size_t>(i)] = 1;
  ev.add(std::vector<std::int32_t>(100, 0), truth);
  const auto m = ev.metrics();
  EXPECT_NEAR(m.at("miou"), (0.9 + 0.0) / 2, 1e-12);
  EXPECT_NEAR(m.at("miou_fg"), 0.0, 1e-12);
  EXPECT_NEAR(m.at("pixel_acc"), 0.9, 1e-12);
}

// Through TaskEvaluator as evaluation uses it: logits whose argmax is the mask score 1 on every key.
TEST(SegmentationMetrics, PerfectMaskThroughTaskEvaluator) {
  TaskSpec spec;
  spec.config.type = io::TaskType::Segmentation;
  spec.num_classes = 3;
  TaskEvaluator ev(spec);
  const std::vector<std::int32_t> mask{0, 1, 2, 0, 0, 2, 1, 0};  // [2, 2, 2]
  Tensor logits = Tensor::zeros({2, 2, 2, 3}, DType::F32);
  Tensor masks = Tensor::zeros({2, 2, 2}, DType::I32);
  for (std::size_t i = 0; i < mask.size(); ++i) {
    logits.data_as<float>()[i * 3 + static_cast<std::size_t>(mask[i])] = 5.0f;
    masks.data_as<std::int32_t>()[i] = mask[i];
  }
  ev.add_segmentation(logits, masks);
  const auto m = ev.metrics();
  EXPECT_DOUBLE_EQ(m.at("miou"), 1.0);
  EXPECT_DOUBLE_EQ(m.at("miou_fg"), 1.0);
  EXPECT_DOUBLE_EQ(m.at("pixel_acc"), 1.0);
}

}  // namespace
}  // namespace gppf::train
