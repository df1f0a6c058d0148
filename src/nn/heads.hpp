#pragma once
// Task heads on top of the backbone's stage outputs:
//  - classification: global and 2x2-grid average pooling of the last stage + linear;
//  - a light FPN neck (lateral 1x1 conv+BN+ReLU per used stage, optional stride-2 context levels below
//    the last stage, top-down nearest upsampling and sums, one 3x3 conv+BN+ReLU on the finest level)
//    shared by the dense heads of one task; on a plain backbone (gppf-vit's one token map) it reads
//    the levels of the head's simple feature pyramid (src/nn/pyramid.hpp) instead of stages;
//  - detection (CenterNet-style, anchor-free): heat map per class, box size (w, h) and centre offset;
//  - segmentation: per-pixel class logits from a neck with context levels, plus a linear read-out of
//    stage 0, bilinearly upsampled to the input.
#include <memory>
#include <vector>

#include "kernels/pool.hpp"
#include "src/nn/layers.hpp"
#include "src/nn/pyramid.hpp"

namespace gppf::nn {

// Pools the last stage over the whole image and over a 2x2 grid (a spatial pyramid, SPPNet's levels 1
// and 2: where a stroke sits matters for digits and garments), concatenates the 5 C values, then a
// linear layer. Needs a last stage of at least 2x2. With grid = false: the mean alone (C values; a
// ViT's mean-pooled tokens, model.vit.pool: mean).
class ClassificationHead final : public Module {
 public:
  ClassificationHead(const std::string& name, int in_channels, int num_classes, std::mt19937_64& rng, bool grid = true);
  Tensor forward(const RunState& rs, const std::vector<Tensor>& features);  // logits [N, classes]
  std::vector<Tensor> backward(const RunState& rs, const Tensor& dlogits);  // one per stage
  void collect_parameters(std::vector<Parameter*>& out) override;
  std::int64_t macs(const std::vector<Shape>& features) const { return m_fc.macs(features.back()[0]); }

 private:
  bool m_grid;
  Linear m_fc;
  std::vector<Shape> m_shapes;
};

struct NeckSpec {
  int first_stage = 0;  // finest stage used; the neck's output has that stage's stride
  int channels = 32;
  // Extra levels below the last stage (3x3 conv stride 2 + BN + ReLU each, as RetinaNet's P6/P7) that
  // join the top-down sum: context wider than the backbone's receptive field.
  int context_levels = 0;
  // A plain backbone (gppf-vit: one map): the log2 scales of the simple feature pyramid that each
  // dense head builds from it (src/nn/pyramid.hpp), fine to coarse; first_stage then picks a level.
  // Empty: the backbone's stages as they are.
  std::vector<int> pyramid;
};

// The levels a dense head's neck reads: the backbone's stages, or the head's simple feature pyramid
// of the backbone's last output.
class NeckInput {
 public:
  // The head reads the levels from spec.first_stage on, and level 0 too if also_first.
  NeckInput(const std::string& name, const std::vector<int>& stage_channels, const NeckSpec& spec, bool also_first,
            std::mt19937_64& rng);
  std::vector<Tensor> forward(const RunState& rs, const std::vector<Tensor>& features);
  std::vector<Tensor> backward(const RunState& rs, std::vector<Tensor> d_levels);
  void collect_parameters(std::vector<Parameter*>& out);
  const std::vector<int>& channels() const { return m_channels; }
  std::vector<Shape> shapes(const std::vector<Shape>& features) const;
  std::int64_t macs(const std::vector<Shape>& features) const;

 private:
  std::unique_ptr<SimplePyramid> m_pyramid;
  std::vector<int> m_channels;
  std::size_t m_num_features = 0;
};

class FpnNeck final : public Module {
 public:
  FpnNeck(const std::string& name, const std::vector<int>& stage_channels, const NeckSpec& spec, int num_tasks,
          std::mt19937_64& rng);
  Tensor forward(const RunState& rs, const std::vector<Tensor>& features);
  std::vector<Tensor> backward(const RunState& rs, const Tensor& dy);  // one per stage (undefined if unused)
  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<Buffer>& out) override;
  std::int64_t macs(const std::vector<Shape>& features) const;
  Shape output_shape(const std::vector<Shape>& features) const;

 private:
  NeckSpec m_spec;
  std::size_t m_num_stages;
  std::vector<std::unique_ptr<Conv2d>> m_lateral;
  std::vector<std::unique_ptr<BatchNorm>> m_lateral_bn;
  Conv2d m_smooth;
  BatchNorm m_smooth_bn;
  std::vector<std::unique_ptr<Conv2d>> m_context;
  std::vector<std::unique_ptr<BatchNorm>> m_context_bn;
  std::vector<Shape> m_level_shapes;  // laterals then context levels, fine to coarse
};

// Targets and outputs of the detection head, at the neck's stride.
struct DetectionOutputs {
  Tensor heatmap;  // logits [N, h, w, classes]
  Tensor size;     // [N, h, w, 2]: box width, height in input pixels / stride
  Tensor offset;   // [N, h, w, 2]: sub-cell centre offset in [0, 1)
};

class DetectionHead final : public Module {
 public:
  DetectionHead(const std::string& name, const std::vector<int>& stage_channels, const NeckSpec& neck, int num_classes,
                int num_tasks, std::mt19937_64& rng);
  DetectionOutputs forward(const RunState& rs, const std::vector<Tensor>& features);
  std::vector<Tensor> backward(const RunState& rs, const DetectionOutputs& grads);
  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<Buffer>& out) override;
  int num_classes() const { return m_num_classes; }
  std::int64_t macs(const std::vector<Shape>& features) const;

 private:
  struct Branch {
    std::unique_ptr<Conv2d> conv;  // 3x3, neck -> neck channels, bias, then ReLU
    std::unique_ptr<Conv2d> out;   // 1x1 to the branch outputs, bias
    Tensor hidden;                 // post-ReLU activation saved for backward
  };
  Tensor run_branch(const RunState& rs, Branch& b, const Tensor& x);
  void backward_branch(const RunState& rs, Branch& b, const Tensor& dy, Tensor& dx, kernels::GradMode mode);

  int m_num_classes;
  NeckInput m_input;
  FpnNeck m_neck;
  Branch m_heat, m_size, m_offset;
};

class SegmentationHead final : public Module {
 public:
  SegmentationHead(const std::string& name, const std::vector<int>& stage_channels, const NeckSpec& neck,
                   int num_classes, int num_tasks, std::mt19937_64& rng);
  // Logits [N, H, W, classes] at the input resolution (out_h, out_w).
  Tensor forward(const RunState& rs, const std::vector<Tensor>& features, int out_h, int out_w);
  std::vector<Tensor> backward(const RunState& rs, const Tensor& dlogits);
  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<Buffer>& out) override;
  std::int64_t macs(const std::vector<Shape>& features) const;

 private:
  NeckInput m_input;
  FpnNeck m_neck;
  Conv2d m_classifier;             // 1x1, bias, on the neck output
  std::unique_ptr<Conv2d> m_skip;  // 1x1, bias, on stage 0 (when the neck starts later)
  Shape m_low_shape, m_skip_shape;
};

}  // namespace gppf::nn
