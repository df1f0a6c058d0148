#pragma once
// Evaluation metrics, own implementations (docs/ARCHITECTURE.md gives the exact definitions):
//  - classification: top-1 and top-5 accuracy;
//  - detection: AP per class with COCO's 101-point interpolated precision, matching detections to
//    ground truth greedily by score at each IoU threshold; mAP@0.5 and mAP@[.5:.95] (ten thresholds)
//    averaged over the classes that have ground truth;
//  - segmentation: `miou`, the mean IoU over all classes incl. background (class 0) that are present
//    in the ground truth or the prediction; `miou_fg`, the same over the foreground classes 1..C-1
//    only (background is most pixels and easy, so it lifts `miou`); pixel accuracy. Label 255 is
//    ignored.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/dataset.hpp"

namespace gppf::train {

struct Detection {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  float score = 0;
  std::int32_t cls = 0;
};

float box_iou(float ax1, float ay1, float ax2, float ay2, float bx1, float by1, float bx2, float by2);

class DetectionEvaluator {
 public:
  explicit DetectionEvaluator(int num_classes) : m_num_classes(num_classes) {}
  void add_image(const std::vector<Detection>& detections, const std::vector<io::Box>& ground_truth);
  // AP of one class at one IoU threshold; -1 when the class has no ground truth.
  double average_precision(int cls, double iou_threshold) const;
  double map50() const;
  double map() const;  // mean over IoU 0.50:0.05:0.95

 private:
  struct Image {
    std::vector<Detection> dets;
    std::vector<io::Box> gts;
  };
  int m_num_classes;
  std::vector<Image> m_images;
};

class SegmentationEvaluator {
 public:
  explicit SegmentationEvaluator(int num_classes);  // classes including background (mask value 0)
  // pred and truth: per-pixel class ids, same length; truth 255 is ignored.
  void add(const std::vector<std::int32_t>& pred, const std::vector<std::uint8_t>& truth);
  void add(const std::int32_t* pred, const std::uint8_t* truth, std::size_t n);
  double miou() const;             // all classes incl. background
  double miou_foreground() const;  // classes 1..C-1
  double pixel_accuracy() const;
  // {miou, miou_fg, pixel_acc}: the keys summary.json reports (DESIGN.md).
  std::map<std::string, double> metrics() const;

 private:
  // Mean IoU over classes [first, C) present in the truth or the prediction; 0 when none is.
  double mean_iou(int first) const;
  int m_num_classes;
  std::vector<std::int64_t> m_confusion;  // [truth][pred]
};

}  // namespace gppf::train
