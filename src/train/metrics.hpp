#pragma once
// Evaluation metrics, own implementations (docs/ARCHITECTURE.md gives the exact definitions):
//  - classification: top-1 and top-5 accuracy;
//  - detection: AP per class with COCO's 101-point interpolated precision, matching detections to
//    ground truth greedily by score at each IoU threshold; mAP@0.5 and mAP@[.5:.95] (ten thresholds)
//    averaged over the classes that have ground truth;
//  - segmentation: mean IoU over classes present in the ground truth or the prediction, and pixel
//    accuracy; label 255 is ignored.
#include <cstdint>
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
  double miou() const;
  double pixel_accuracy() const;

 private:
  int m_num_classes;
  std::vector<std::int64_t> m_confusion;  // [truth][pred]
};

}  // namespace gppf::train
