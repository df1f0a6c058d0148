#pragma once
// Lego layers (DESIGN.md, "The network"): L interchangeable bottleneck branches; task t runs only the
// legos S_t chosen by its router (top-k of its learned logits) and outputs
//   y = relu(shortcut(x) + sum_{i in S_t} g_{t,i} * lego_i(x)),  g_{t,i} = softmax(logits_t over all L)_i:
// the gates are the full softmax at the selected legos, not renormalised over S_t, so that the
// router gets a gradient at every k (with k = 1, a softmax over S_t is the constant 1).
// Options: always-on shared legos (gate 1, outside the router), noisy top-k or soft (all-lego)
// routing during a warm-up, and a usage-balance regulariser across tasks.
#include <memory>
#include <optional>
#include <vector>

#include "src/nn/layers.hpp"
#include "src/nn/router.hpp"

namespace gppf::nn {

// One bottleneck branch: 1x1 (in -> width) BN ReLU, 3x3 stride s (width -> width) BN ReLU, 1x1 (width
// -> out) BN. The stride sits on the 3x3, as torchvision's ResNet v1.5.
class Bottleneck final : public Module {
 public:
  Bottleneck(const std::string& name, int in_channels, int width, int out_channels, int stride, int num_tasks,
             std::mt19937_64& rng);
  Tensor forward(const RunState& rs, const Tensor& x);
  void backward(const RunState& rs, const Tensor& dy, Tensor& dx, kernels::GradMode dx_mode);
  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<Buffer>& out) override;
  std::int64_t macs(const Shape& x) const;
  // The context of the last training forward, moved out and back (see Conv2d::take_saved).
  struct Saved {
    Tensor c1, c2, c3;
    BatchNorm::Saved b1, b2, b3;
  };
  Saved take_saved();
  void restore_saved(Saved s);
  Conv2d& conv(int i) { return i == 1 ? m_conv1 : i == 2 ? m_conv2 : m_conv3; }
  BatchNorm& bn(int i) { return i == 1 ? m_bn1 : i == 2 ? m_bn2 : m_bn3; }

 private:
  Conv2d m_conv1, m_conv2, m_conv3;
  BatchNorm m_bn1, m_bn2, m_bn3;
};

struct LegoLayerSpec {
  int in_channels = 0, out_channels = 0, stride = 1;
  int num_legos = 4;   // L: routed legos
  int top_k = 2;       // k routed legos active per task
  int num_shared = 0;  // always-on legos, outside the router
  int lego_width = 0;  // bottleneck width of one lego
};

class LegoStrategy;

// What a training forward of a lego layer keeps for its backward (the strategy's own subclass): the
// layer itself keeps nothing between the two, so several micro-batches can be in flight.
struct LegoContext {
  virtual ~LegoContext() = default;
};

class LegoLayer final : public Module, public RoutedLayer {
 public:
  LegoLayer(const std::string& name, const LegoLayerSpec& spec, int num_tasks, const RoutingOptions& routing,
            std::mt19937_64& rng);
  ~LegoLayer() override;

  // `step` drives the warm-up schedule and seeds the routing noise (deterministic per task and step).
  Route route(int task, std::int64_t step, bool training) const override;
  struct Output {
    Tensor y;
    std::unique_ptr<LegoContext> saved;  // null unless a backward can follow (training)
  };
  // Runs through the layer's strategy (set_strategy). x is undefined for an expert-parallel member
  // that only serves its legos in this round; so is y.
  Output forward(const RunState& rs, const Tensor& x, std::int64_t step);
  // Consumes what forward saved; dx overwritten. Also writes the router gradient of rs.task.
  Tensor backward(const RunState& rs, const Tensor& dy, std::unique_ptr<LegoContext> saved);
  // Adds the balance regulariser's gradient to the routers of `tasks` (once per step, after every
  // task's backward); returns its value (0 when balance_weight is 0).
  float apply_balance(const std::vector<int>& tasks) override;

  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<Buffer>& out) override;

  const LegoLayerSpec& spec() const { return m_spec; }
  const std::string& name() const override { return m_name; }
  int num_legos_total() const override { return static_cast<int>(m_legos.size()); }
  Parameter& router(int task) override { return m_router.logits(task); }
  Router& routing() override { return m_router; }
  int num_tasks() const override { return m_router.num_tasks(); }
  // Multiply-adds of task's path through this layer for input shape x (shared + k legos + shortcut).
  std::int64_t macs(const Shape& x, int active_legos) const;
  Shape output_shape(const Shape& x) const;
  // Position among the backbone's lego layers (the exchange's shape tables, Parameter::owner).
  void set_index(int index);
  int index() const { return m_index; }
  // How a routed step runs (src/nn/lego_strategy.hpp), chosen once per run; merged by default.
  void set_strategy(std::shared_ptr<LegoStrategy> strategy);
  const LegoStrategy& strategy() const { return *m_strategy; }

  // For the strategies: lego i (shared first), the projection shortcut (null: identity), and the
  // router gradient of `task` from the gate gradients d loss / d route.gates[j].
  Bottleneck& lego(int i) { return *m_legos[static_cast<std::size_t>(i)]; }
  Conv2d* proj() { return m_proj.get(); }
  BatchNorm* proj_bn() { return m_proj_bn.get(); }
  // dgate [route entries] on the router's device; the host-vector form uploads it first.
  void accumulate_router_grad(int task, const Route& route, const Tensor& dgate, const Stream& s);
  void accumulate_router_grad(int task, const Route& route, const std::vector<float>& dgate);
  // The host's copy of task's router logits, which route() reads (Backbone::refresh_routing keeps it
  // current: on a GPU, routing from the device values would read them back in every layer).
  void set_router_copy(int task, std::vector<float> logits) override;
  // Host routes whose host copy differed from the router's values, since the start (tests assert 0).
  static std::int64_t stale_router_reads();

 private:
  void tag_owners();
  // The layer's strategy, or the task-batched one for a batch of several tasks.
  LegoStrategy& strategy_for(const RunState& rs) const;

  std::string m_name;
  LegoLayerSpec m_spec;
  int m_index = -1;
  std::vector<std::unique_ptr<Bottleneck>> m_legos;  // shared first, then routed
  std::unique_ptr<Conv2d> m_proj;                    // projection shortcut when shape changes
  std::unique_ptr<BatchNorm> m_proj_bn;
  Router m_router;
  std::shared_ptr<LegoStrategy> m_strategy;
};

}  // namespace gppf::nn
