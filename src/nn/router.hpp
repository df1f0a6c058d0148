#pragma once
// The per-task router of a lego layer (DESIGN.md, "The network"): task t's learned logits z_t over
// the L routed legos choose its top-k, and the gates are the full softmax at the chosen legos
// (src/nn/lego.hpp). Shared by every lego type: the residual lego layer (src/nn/lego.hpp) and the
// transformer's MLP lego layer. Routing reads a host copy of the logits, refreshed once per step.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "src/nn/module.hpp"

namespace gppf::nn {

struct RoutingOptions {
  enum class Warmup { None, Noisy, Soft };
  Warmup warmup = Warmup::Noisy;
  std::int64_t warmup_steps = 0;
  float noise_std = 1.0f;       // std of the Gaussian added to the logits in noisy warm-up
  float balance_weight = 0.0f;  // weight of the usage-balance regulariser (0: off)
  float init_std = 0.1f;        // router logits start N(0, init_std^2), seeded per task and layer
};

// The routing decision of one task in one layer for one step.
struct Route {
  std::vector<int> legos;    // indices into the layer's legos (shared ones first)
  std::vector<float> gates;  // same length
  std::vector<int> routed;   // for each entry of legos: its index among the router logits, or -1 if shared
  std::vector<float> probs;  // softmax over all L router logits (routing noise included): the gates' source
};

class Router {
 public:
  // Logits "<layer>.router.task<t>" [num_legos] per task, seeded by the layer's name and the task.
  Router(std::string layer, int num_legos, int top_k, int num_shared, int num_tasks, const RoutingOptions& routing);

  // `step` drives the warm-up schedule and seeds the routing noise (deterministic per task and step).
  Route route(int task, std::int64_t step, bool training) const;
  Parameter& logits(int task) { return m_logits[static_cast<std::size_t>(task)]; }
  int num_tasks() const { return static_cast<int>(m_logits.size()); }
  // d loss / d logits of `task` from the gate gradients dgate [route entries] (on the logits'
  // device; the host-vector form uploads it first).
  void accumulate_grad(int task, const Route& route, const Tensor& dgate, const Stream& s);
  void accumulate_grad(int task, const Route& route, const std::vector<float>& dgate);
  // The host's copy of task's logits, which route() reads.
  void set_copy(int task, std::vector<float> logits);
  // The usage-balance regulariser over `tasks` (its gradient added to their logits); its value.
  float apply_balance(const std::vector<int>& tasks);
  // Tags the logits as the routers of lego layer `layer_index` (Parameter::owner).
  void tag_owners(int layer_index);
  void collect_parameters(std::vector<Parameter*>& out);
  // Host routes whose host copy differed from the logits, since the start (tests assert 0).
  static std::int64_t stale_reads();

 private:
  // Task's logits as routing reads them (see route()).
  std::vector<float> routed_logits(int task) const;

  std::string m_layer;
  int m_num_legos = 0, m_top_k = 0, m_num_shared = 0;
  RoutingOptions m_routing;
  std::vector<Parameter> m_logits;              // per task, on the network's device
  std::vector<std::vector<float>> m_host_copy;  // their host copy (set_copy)
};

// What routing consumers see of a lego layer of any type (the residual LegoLayer, the transformer's
// MlpLegoLayer): the routing statistics, the report's heat maps, fine-tuning's probe, the host
// copies of the router logits.
class RoutedLayer {
 public:
  virtual ~RoutedLayer() = default;
  virtual const std::string& name() const = 0;
  virtual Route route(int task, std::int64_t step, bool training) const = 0;
  virtual Parameter& router(int task) = 0;
  virtual int num_tasks() const = 0;
  virtual int num_legos_total() const = 0;  // shared + routed
  virtual void set_router_copy(int task, std::vector<float> logits) = 0;
  virtual float apply_balance(const std::vector<int>& tasks) = 0;
};

}  // namespace gppf::nn
