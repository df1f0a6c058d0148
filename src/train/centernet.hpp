#pragma once
// CenterNet-style targets and decoding for the anchor-free detection head (Zhou et al., "Objects as
// Points"): a Gaussian peak per object centre on its class's heat map, box size and sub-cell offset
// regressed at the centre cell only. Sizes are in output-grid cells (input pixels / stride).
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "io/dataset.hpp"
#include "src/train/metrics.hpp"

namespace gppf::train {

// CenterNet's weights of the detection loss parts in a task's total (before its loss_weight): 1 for
// the heat map, 0.1 for sizes, 1 for offsets. The metrics log keeps the parts unweighted.
inline constexpr float kSizeLossWeight = 0.1f;
inline double centernet_part_weight(const std::string& part) { return part == "size" ? kSizeLossWeight : 1.0; }

struct CenterNetTargets {
  Tensor heatmap;  // f32 [N, h, w, C] in [0, 1], 1 exactly at object centres
  Tensor size;     // f32 [N, h, w, 2]: box (width, height) / stride at centre cells
  Tensor offset;   // f32 [N, h, w, 2]: centre / stride - floor(centre / stride)
  Tensor weight;   // f32 [N, h, w, 2]: 1 at centre cells, else 0
  int num_objects = 0;
};

// CenterNet's Gaussian radius for a box of (height, width) cells such that a box shifted by the
// radius keeps IoU >= min_overlap with it.
float gaussian_radius(float height, float width, float min_overlap = 0.7f);

// `pinned`: in page-locked host memory, for an upload that does not wait for the GPU (training on CUDA).
CenterNetTargets encode_centernet(const std::vector<std::vector<io::Box>>& boxes, int out_h, int out_w, int stride,
                                  int num_classes, bool pinned = false);

// Peaks of sigmoid(heat) that are maxima of their 3x3 neighbourhood, best `k` first, above
// `min_score`; boxes in input pixels. heat/size/offset point at one image's [h, w, C|2] maps.
std::vector<Detection> decode_centernet(const float* heat_logits, const float* size, const float* offset, int out_h,
                                        int out_w, int num_classes, int stride, int k, float min_score = 0.01f);

}  // namespace gppf::train
