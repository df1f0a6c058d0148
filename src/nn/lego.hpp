#pragma once
// Lego layers (DESIGN.md, "The network"): L interchangeable bottleneck branches; task t runs only the
// legos S_t chosen by its router (top-k of its learned logits) and outputs
//   y = relu(shortcut(x) + sum_{i in S_t} g_{t,i} * lego_i(x)),  g_t = softmax(logits_t over S_t).
// Options: always-on shared legos (gate 1, outside the router), noisy top-k or soft (all-lego)
// routing during a warm-up, and a usage-balance regulariser across tasks.
#include <memory>
#include <optional>
#include <vector>

#include "src/nn/layers.hpp"

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
  void collect_buffers(std::vector<NamedTensor>& out) override;
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

struct RoutingOptions {
  enum class Warmup { None, Noisy, Soft };
  Warmup warmup = Warmup::Noisy;
  std::int64_t warmup_steps = 0;
  float noise_std = 1.0f;       // std of the Gaussian added to the logits in noisy warm-up
  float balance_weight = 0.0f;  // weight of the usage-balance regulariser (0: off)
  float init_std = 0.1f;        // router logits start N(0, init_std^2), seeded per task and layer
};

struct LegoLayerSpec {
  int in_channels = 0, out_channels = 0, stride = 1;
  int num_legos = 4;   // L: routed legos
  int top_k = 2;       // k routed legos active per task
  int num_shared = 0;  // always-on legos, outside the router
  int lego_width = 0;  // bottleneck width of one lego
};

// The routing decision of one task in one layer for one step.
struct Route {
  std::vector<int> legos;    // indices into the layer's legos (shared ones first)
  std::vector<float> gates;  // same length
  std::vector<int> routed;   // for each entry of legos: its index among the router logits, or -1 if shared
};

class MergedLegos;

class LegoLayer final : public Module {
 public:
  LegoLayer(const std::string& name, const LegoLayerSpec& spec, int num_tasks, const RoutingOptions& routing,
            std::mt19937_64& rng);
  ~LegoLayer() override;

  // `step` drives the warm-up schedule and seeds the routing noise (deterministic per task and step).
  Route route(int task, std::int64_t step, bool training) const;
  Tensor forward(const RunState& rs, const Tensor& x, std::int64_t step);
  // dx overwritten. Also writes the router gradient of rs.task.
  Tensor backward(const RunState& rs, const Tensor& dy);
  // Adds the balance regulariser's gradient to the routers of `tasks` (once per step, after every
  // task's backward); returns its value (0 when balance_weight is 0).
  float apply_balance(const std::vector<int>& tasks);

  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<NamedTensor>& out) override;

  const LegoLayerSpec& spec() const { return m_spec; }
  const std::string& name() const { return m_name; }
  int num_legos_total() const { return static_cast<int>(m_legos.size()); }
  Parameter& router(int task) { return m_router[static_cast<std::size_t>(task)]; }
  // Multiply-adds of task's path through this layer for input shape x (shared + k legos + shortcut).
  std::int64_t macs(const Shape& x, int active_legos) const;
  Shape output_shape(const Shape& x) const;
  // Position among the backbone's lego layers (for the expert-parallel exchange's shape tables).
  void set_index(int index) { m_index = index; }
  // Whether a task's active legos run as one wide block (src/nn/merged_legos.hpp; on by default) or
  // one by one (tests compare the two).
  void set_merge(bool on) { m_merge = on; }

 private:
  // Expert parallelism (RunState::exchange): this member's task (if any) and the requests of the other
  // members of its block, with activations moved by all-to-all. x is undefined when this member runs
  // no task in the round; so is the result.
  Tensor forward_exchange(const RunState& rs, const Tensor& x);
  Tensor backward_exchange(const RunState& rs, const Tensor& dy);
  Tensor shortcut_forward(const RunState& rs, const Tensor& x);
  Tensor shortcut_backward(const RunState& rs, const Tensor& da);
  int where(const dist::LegoExchange& ex, int member, std::size_t entry) const;
  bool needs(const dist::LegoExchange& ex, int member, int holder) const;
  // Adds the router gradient of `task` from the gate gradients of m_route's entries.
  void accumulate_router_grad(int task, const std::vector<float>& dgate);

  std::string m_name;
  LegoLayerSpec m_spec;
  int m_index = -1;
  RoutingOptions m_routing;
  std::vector<std::unique_ptr<Bottleneck>> m_legos;  // shared first, then routed
  std::unique_ptr<Conv2d> m_proj;                    // projection shortcut when shape changes
  std::unique_ptr<BatchNorm> m_proj_bn;
  std::vector<Parameter> m_router;  // per task: logits [num_legos], on the host
  bool m_merge = true;
  std::unique_ptr<MergedLegos> m_merged;  // saved state of the last merged training forward
  // saved by forward for backward
  Route m_route;
  std::vector<Tensor> m_outputs;
  Tensor m_y;
  Shape m_x_shape;
  // Expert parallelism: the round's routes of every block member, and every lego call that a backward
  // will need (this member's own and the ones it served), in call order.
  struct Call {
    int member = 0;
    std::size_t entry = 0;  // index into routes[member].legos
    Bottleneck::Saved saved;
    Tensor out;
  };
  std::vector<Route> m_routes;
  std::vector<Call> m_calls;
};

}  // namespace gppf::nn
