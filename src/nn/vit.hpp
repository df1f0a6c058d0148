#pragma once
// GPPF-ViT's backbone (issue "GPPF-ViT"): patch embedding (a ColourConv of stride P: grey and colour
// images share it), learned position embeddings on the pre-training token grid (bilinearly
// interpolated when an input's grid differs: detection, segmentation, transfer), `depth` pre-norm
// transformer blocks whose MLPs are lego layers (src/nn/transformer.hpp), and a final layer norm.
// The output is the token map [N, H/P, W/P, D], NHWC like the residual backbone's stage outputs.
// With pool "token" a learned class token leads the sequence (its own embedding, no position: one
// learned vector either way) and its final state [N, 1, 1, D] follows the map as a second output,
// which classification heads read; otherwise classification pools the tokens.
#include <memory>
#include <string>
#include <vector>

#include "src/nn/colour_conv.hpp"
#include "src/nn/transformer.hpp"

namespace gppf::nn {

struct VitSpec {
  int patch = 4, dim = 64, depth = 4, heads = 4;
  int mlp_hidden = 0;  // the dense MLP's hidden width (0: 4 * dim); each of the k active legos gets 1/k
  int num_legos = 4, top_k = 2, num_shared = 0;
  int grid_h = 0, grid_w = 0;  // the position embeddings' token grid (pre-training input / patch)
  // What classification heads read: "grid" (the map's mean and 2x2-grid means), "mean", or "token"
  // (a class token's final state).
  std::string pool = "grid";
  bool class_token() const { return pool == "token"; }
  RoutingOptions routing;
};

class VitBackbone final : public Module {
 public:
  VitBackbone(const VitSpec& spec, int num_tasks, std::uint64_t seed);
  // x [N, H, W, 1 | 3], H and W multiples of the patch -> {the token map [N, H/P, W/P, D]}, and
  // with a class token also its state [N, 1, 1, D].
  // x undefined: a round in which this process runs no task; it serves its MLP legos (returns {}).
  std::vector<Tensor> forward(const RunState& rs, const Tensor& x, std::int64_t step);
  // The backward of a serving round.
  void serve_backward(const RunState& rs);
  // The outputs' gradients (either may be undefined: no head read it; not both). Writes every
  // parameter gradient of the pass.
  void backward(const RunState& rs, const Tensor& d_map, const Tensor& d_token = Tensor());
  void collect_parameters(std::vector<Parameter*>& out) override;
  std::vector<MlpLegoLayer*> lego_layers();
  const VitSpec& spec() const { return m_spec; }
  // The token map's shape for an input of shape x, and the multiply-adds of one pass with `active`
  // legos per block (attention's two T x T products included, the norms not).
  Shape output_shape(const Shape& x) const;
  // The input of every block's MLP legos, [N, tokens, D], for an input of shape x.
  std::vector<Shape> layer_input_shapes(const Shape& x) const;
  std::int64_t macs(const Shape& x, int active) const;

 private:
  VitSpec m_spec;
  ColourConv m_patch;
  Parameter m_pos;  // [grid_h, grid_w, D]
  Parameter m_cls;  // [D], with pool "token" only
  std::vector<std::unique_ptr<TransformerBlock>> m_blocks;
  LayerNorm m_norm;
  Shape m_map_shape;  // the last training forward's token map
};

}  // namespace gppf::nn
