// mAP and mIoU on cases computed by hand.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "src/train/metrics.hpp"

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

TEST(SegmentationMetrics, ConfusionByHand) {
  SegmentationEvaluator ev(3);
  ev.add(std::vector<std::int32_t>{0, 1, 1, 2, 0}, std::vector<std::uint8_t>{0, 1, 2, 2, 255});
  // IoU: class 0 1/1, class 1 1/2, class 2 1/2; the 255 pixel is ignored.
  EXPECT_NEAR(ev.miou(), (1.0 + 0.5 + 0.5) / 3, 1e-12);
  EXPECT_NEAR(ev.pixel_accuracy(), 0.75, 1e-12);
  EXPECT_THROW(ev.add(std::vector<std::int32_t>{3}, std::vector<std::uint8_t>{0}), Error);
}

TEST(SegmentationMetrics, AbsentClassesAreNotAveraged) {
  SegmentationEvaluator ev(4);
  ev.add(std::vector<std::int32_t>{0, 0, 1, 1}, std::vector<std::uint8_t>{0, 0, 1, 0});
  // class 0: tp 2, union 3; class 1: tp 1, union 2; classes 2, 3 absent.
  EXPECT_NEAR(ev.miou(), (2.0 / 3 + 0.5) / 2, 1e-12);
}

}  // namespace
}  // namespace gppf::train
