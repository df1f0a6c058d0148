#include "src/train/metrics.hpp"

#include <algorithm>
#include <numeric>

#include "core/error.hpp"

namespace gppf::train {

float box_iou(float ax1, float ay1, float ax2, float ay2, float bx1, float by1, float bx2, float by2) {
  const float iw = std::max(0.0f, std::min(ax2, bx2) - std::max(ax1, bx1));
  const float ih = std::max(0.0f, std::min(ay2, by2) - std::max(ay1, by1));
  const float inter = iw * ih;
  const float uni = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter;
  return uni > 0 ? inter / uni : 0.0f;
}

void DetectionEvaluator::add_image(const std::vector<Detection>& detections, const std::vector<io::Box>& ground_truth) {
  m_images.push_back({detections, ground_truth});
}

double DetectionEvaluator::average_precision(int cls, double iou_threshold) const {
  struct Scored {
    float score;
    std::size_t image, det;
  };
  std::vector<Scored> all;
  std::int64_t num_gt = 0;
  for (std::size_t i = 0; i < m_images.size(); ++i) {
    for (const auto& g : m_images[i].gts) num_gt += g.cls == cls;
    for (std::size_t d = 0; d < m_images[i].dets.size(); ++d)
      if (m_images[i].dets[d].cls == cls) all.push_back({m_images[i].dets[d].score, i, d});
  }
  if (num_gt == 0) return -1.0;
  // Highest score first; ties in a fixed order (image, then detection index).
  std::stable_sort(all.begin(), all.end(), [](const Scored& a, const Scored& b) { return a.score > b.score; });
  std::vector<std::vector<bool>> taken(m_images.size());
  for (std::size_t i = 0; i < m_images.size(); ++i) taken[i].assign(m_images[i].gts.size(), false);
  std::vector<double> precision, recall;
  std::int64_t tp = 0, fp = 0;
  for (const auto& s : all) {
    const Detection& d = m_images[s.image].dets[s.det];
    const auto& gts = m_images[s.image].gts;
    double best = -1;
    std::ptrdiff_t best_j = -1;
    for (std::size_t j = 0; j < gts.size(); ++j) {
      if (gts[j].cls != cls || taken[s.image][j]) continue;
      const double iou = box_iou(d.x1, d.y1, d.x2, d.y2, gts[j].x1, gts[j].y1, gts[j].x2, gts[j].y2);
      if (iou > best) {
        best = iou;
        best_j = static_cast<std::ptrdiff_t>(j);
      }
    }
    if (best_j >= 0 && best >= iou_threshold) {
      taken[s.image][static_cast<std::size_t>(best_j)] = true;
      ++tp;
    } else {
      ++fp;
    }
    precision.push_back(static_cast<double>(tp) / static_cast<double>(tp + fp));
    recall.push_back(static_cast<double>(tp) / static_cast<double>(num_gt));
  }
  // COCO: make precision monotone from the right, then sample it at recall 0, 0.01, ..., 1.
  for (int i = static_cast<int>(precision.size()) - 2; i >= 0; --i)
    precision[static_cast<std::size_t>(i)] =
        std::max(precision[static_cast<std::size_t>(i)], precision[static_cast<std::size_t>(i) + 1]);
  double sum = 0;
  for (int k = 0; k <= 100; ++k) {
    const double r = k / 100.0;
    const auto it = std::lower_bound(recall.begin(), recall.end(), r - 1e-12);
    if (it != recall.end()) sum += precision[static_cast<std::size_t>(it - recall.begin())];
  }
  return sum / 101.0;
}

double DetectionEvaluator::map50() const {
  double sum = 0;
  int n = 0;
  for (int c = 0; c < m_num_classes; ++c) {
    const double ap = average_precision(c, 0.5);
    if (ap >= 0) {
      sum += ap;
      ++n;
    }
  }
  return n ? sum / n : 0.0;
}

double DetectionEvaluator::map() const {
  double sum = 0;
  int n = 0;
  for (int c = 0; c < m_num_classes; ++c) {
    double class_sum = 0;
    bool has = true;
    for (int t = 0; t < 10; ++t) {
      const double ap = average_precision(c, 0.5 + 0.05 * t);
      if (ap < 0) {
        has = false;
        break;
      }
      class_sum += ap;
    }
    if (has) {
      sum += class_sum / 10;
      ++n;
    }
  }
  return n ? sum / n : 0.0;
}

SegmentationEvaluator::SegmentationEvaluator(int num_classes)
    : m_num_classes(num_classes), m_confusion(static_cast<std::size_t>(num_classes) * num_classes, 0) {
  GPPF_CHECK(num_classes >= 1, "segmentation metrics need at least one class");
}

void SegmentationEvaluator::add(const std::vector<std::int32_t>& pred, const std::vector<std::uint8_t>& truth) {
  GPPF_CHECK(pred.size() == truth.size(), "segmentation metrics: ", pred.size(), " predicted pixels for ", truth.size(),
             " labelled ones");
  add(pred.data(), truth.data(), pred.size());
}

void SegmentationEvaluator::add(const std::int32_t* pred, const std::uint8_t* truth, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (truth[i] == 255) continue;
    GPPF_CHECK(truth[i] < m_num_classes && pred[i] >= 0 && pred[i] < m_num_classes, "segmentation metrics: class ",
               static_cast<int>(truth[i]), " / prediction ", pred[i], " outside [0, ", m_num_classes, ")");
    ++m_confusion[static_cast<std::size_t>(truth[i]) * static_cast<std::size_t>(m_num_classes) +
                  static_cast<std::size_t>(pred[i])];
  }
}

double SegmentationEvaluator::miou() const { return mean_iou(0); }

double SegmentationEvaluator::miou_foreground() const { return mean_iou(1); }

std::map<std::string, double> SegmentationEvaluator::metrics() const {
  return {{"miou", miou()}, {"miou_fg", miou_foreground()}, {"pixel_acc", pixel_accuracy()}};
}

double SegmentationEvaluator::mean_iou(int first) const {
  const auto C = static_cast<std::size_t>(m_num_classes);
  double sum = 0;
  int n = 0;
  for (auto c = static_cast<std::size_t>(first); c < C; ++c) {
    std::int64_t tp = m_confusion[c * C + c], row = 0, col = 0;
    for (std::size_t k = 0; k < C; ++k) {
      row += m_confusion[c * C + k];
      col += m_confusion[k * C + c];
    }
    const std::int64_t uni = row + col - tp;
    if (uni == 0) continue;  // class absent from truth and prediction
    sum += static_cast<double>(tp) / static_cast<double>(uni);
    ++n;
  }
  return n ? sum / n : 0.0;
}

double SegmentationEvaluator::pixel_accuracy() const {
  const auto C = static_cast<std::size_t>(m_num_classes);
  std::int64_t correct = 0, total = 0;
  for (std::size_t c = 0; c < C; ++c) {
    correct += m_confusion[c * C + c];
    for (std::size_t k = 0; k < C; ++k) total += m_confusion[c * C + k];
  }
  return total ? static_cast<double>(correct) / static_cast<double>(total) : 0.0;
}

}  // namespace gppf::train
