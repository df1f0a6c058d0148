#pragma once
// Backbones made of lego layers: gppf-mini (CPU-sized) and gppf-r50 (ResNet-50's stem and stage
// layout, 3-4-6-3 blocks of widths 256/512/1024/2048, each block a lego layer), and gppf-vit
// (src/nn/vit.hpp: transformer blocks whose MLPs are lego layers; one output, the token map).
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/pool.hpp"
#include "src/nn/colour_conv.hpp"
#include "src/nn/lego.hpp"
#include "src/nn/vit.hpp"

namespace gppf::nn {

struct StageSpec {
  int channels = 0;  // output channels of every block of the stage
  int blocks = 1;
  int stride = 1;  // stride of the stage's first block
};

struct BackboneSpec {
  std::string name = "gppf-mini";
  int stem_channels = 16;
  int stem_kernel = 3;  // gppf-r50: 7 (stride 2) followed by a 3x3/2 max pool
  int stem_stride = 1;
  bool stem_pool = false;
  std::vector<StageSpec> stages;
  int num_legos = 4;
  int top_k = 2;
  int num_shared = 0;
  // Width of one lego = dense bottleneck width (channels / 4) / top_k: k active legos cost about one
  // dense bottleneck block, the paper's "similar computation budget".
  int lego_width(int channels) const;
  RoutingOptions routing;
  // gppf-vit: the transformer's layout (stem and stages unused); its legos, k and shared legos and
  // its routing are the keys above.
  std::optional<VitSpec> vit;

  static BackboneSpec mini();
  // gppf-vit at CPU size (configs/vit-mini.yaml): patch 4, width 64, 4 blocks of 4 heads.
  static BackboneSpec vit_mini();
  static BackboneSpec r50();
};

// The stem: a ColourConv (grey or colour images, src/nn/colour_conv.hpp), BN, ReLU, optional max pool.
class Stem final : public Module {
 public:
  Stem(const BackboneSpec& spec, int num_tasks, std::uint64_t seed);
  Tensor forward(const RunState& rs, const Tensor& x);
  void backward(const RunState& rs, const Tensor& dy);
  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<Buffer>& out) override;
  std::int64_t macs(const Shape& x) const;
  Shape output_shape(const Shape& x) const;

 private:
  kernels::Pool2dParams m_pool;
  bool m_use_pool;
  ColourConv m_conv;
  BatchNorm m_bn;
  Tensor m_pool_in, m_pool_out;
};

// What a backbone forward saved for its backward: one context per lego layer (the stem still keeps
// its own in members).
struct BackboneSaved {
  std::vector<std::unique_ptr<LegoContext>> layers;
};

class Backbone final : public Module {
 public:
  Backbone(const BackboneSpec& spec, int num_tasks, std::uint64_t seed);
  // Returns the output of every stage (strides grow), for heads that use several scales; `saved`
  // (when non-null) gets what backward needs. x undefined: an expert-parallel round in which this
  // rank only serves its legos.
  std::vector<Tensor> forward(const RunState& rs, const Tensor& x, std::int64_t step, BackboneSaved* saved = nullptr);
  // d_features: one gradient per stage output; undefined tensors mean "no gradient from the head".
  // Empty: a serving round's backward. Consumes `saved`.
  void backward(const RunState& rs, const std::vector<Tensor>& d_features, BackboneSaved& saved);
  // How every lego layer runs a routed step (src/nn/lego_strategy.hpp); once per run.
  void set_strategy(const std::shared_ptr<LegoStrategy>& strategy);
  // gppf-vit: where its MLP legos run (null: here).
  void set_mlp_runner(const std::shared_ptr<MlpLegoRunner>& runner);
  // The usage-balance regulariser over `tasks`, every lego layer; returns the summed value.
  float apply_balance(const std::vector<int>& tasks);
  // Copies every router's logits to the host copies that routing reads (LegoLayer::set_router_copy),
  // with one sync; after anything that changed them (an optimizer step, a checkpoint load).
  void refresh_routing(const Stream& s);
  // The routing values of a training step in memory, for a step captured as a graph (core/graph.hpp):
  // computes the route of every routed layer for each of `tasks` at (step, training) with the host
  // code, writes their gates and probabilities to the backbone's route table with ONE copy on `s`
  // (nn::RouteTable), and makes route() return those routes, with views of the table, for exactly
  // that (task, step, training); the kernels then read the gate and probability values from the table.
  // Call it once per training step, after the host copies are current (refresh_routing, or the
  // step's own refresh at Network::end_step) and before the step's first pass, on the stream the
  // passes run on (their kernels are ordered after the copy), outside graph capture. Returns the
  // routing key (RouteTable::prepare): a captured step may be replayed while the key is unchanged.
  // The staging tables are double-buffered; a step must sync (Network::end_step) between every second
  // call, else the call waits for the copy of two calls ago (a counted sync). Routes of other calls
  // (evaluation, inference, reports, probes) are computed on the spot, without table views.
  std::vector<int> prepare_routes(const std::vector<int>& tasks, std::int64_t step, bool training, const Stream& s);
  // The route table (undefined before the first prepare_routes), for tests.
  const Tensor& route_table() const { return m_route_table.table(); }
  // The same in two halves, for a caller that reads more with the same sync: every router's logits
  // (layer by layer, task by task), and their host copies from values[at...]; returns the end.
  std::vector<const Tensor*> router_values();
  std::size_t set_router_copies(const std::vector<float>& values, std::size_t at);

  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<Buffer>& out) override;

  const BackboneSpec& spec() const { return m_spec; }
  // The residual lego layers (none for gppf-vit), and every routed layer of either kind.
  std::vector<LegoLayer*> lego_layers();
  std::vector<RoutedLayer*> routed_layers();
  bool is_vit() const { return m_vit != nullptr; }
  // Index of the last lego layer of each stage.
  const std::vector<int>& stage_ends() const { return m_stage_ends; }
  std::vector<int> stage_channels() const;
  std::vector<int> stage_strides() const;  // cumulative stride of each stage output
  // Multiply-adds of one forward pass for input shape x with `active` legos per layer.
  std::int64_t macs(const Shape& x, int active) const;
  std::int64_t stem_macs(const Shape& x) const { return m_stem.macs(x); }
  Shape stem_output_shape(const Shape& x) const { return m_stem.output_shape(x); }
  // Shapes of the stage outputs for an input of shape x.
  std::vector<Shape> stage_shapes(const Shape& x) const;
  // The input shape of every lego layer for an input of shape x.
  std::vector<Shape> layer_input_shapes(const Shape& x) const;

 private:
  BackboneSpec m_spec;
  Stem m_stem;
  std::vector<std::unique_ptr<LegoLayer>> m_layers;
  std::vector<int> m_stage_ends;
  std::unique_ptr<VitBackbone> m_vit;
  RouteTable m_route_table;
};

}  // namespace gppf::nn
