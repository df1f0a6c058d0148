#pragma once
// The per-task router of a lego layer (DESIGN.md, "The network"): task t's learned logits z_t over
// the L routed legos choose its top-k, and the gates are the full softmax at the chosen legos
// (src/nn/lego.hpp). Shared by every lego type: the residual lego layer (src/nn/lego.hpp) and the
// transformer's MLP lego layer. Routing reads a host copy of the logits, refreshed once per step.
#include <cstdint>
#include <string>
#include <vector>

#include "core/cuda_runtime.hpp"
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
  // A route prepared for its step (RouteTable, Backbone::prepare_routes): the same gates and probs in
  // the step's route table on the logits' device, f32 [entries] and [L], which the kernels read
  // instead of the host floats (a captured graph replays with the table's values). Undefined for a
  // route computed on the spot (evaluation, inference, reports, probes).
  Tensor gate_values;
  Tensor prob_values;
};

// y = gate_j * x + beta * y for route entry j: the gate read from the route table when the route has
// one (kernels::axpby_scalar), else passed by value (kernels::axpby); the same floats either way.
void gated_axpby(const Route& r, std::size_t j, const Tensor& x, float beta, Tensor& y, const Stream& s);
// Where route entry j's gate lies in the route table (host or device memory, as the table), or null.
const float* gate_address(const Route& r, std::size_t j);

class Router {
 public:
  // Logits "<layer>.router.task<t>" [num_legos] per task, seeded by the layer's name and the task.
  Router(std::string layer, int num_legos, int top_k, int num_shared, int num_tasks, const RoutingOptions& routing);

  // `step` drives the warm-up schedule and seeds the routing noise (deterministic per task and step).
  // The route prepared for exactly (task, step, training) from the logits routing reads now, with its
  // table views (set_prepared), else one computed here without them.
  Route route(int task, std::int64_t step, bool training) const;
  // RouteTable: computes task's route for (step, training) as route() does, with views into its
  // table slot (gate_slot f32 [max_entries()], prob_slot f32 [L]), and keeps it for route() (until
  // clear_prepared, or until the logits routing reads change).
  const Route& prepare(int task, std::int64_t step, bool training, const Tensor& gate_slot, const Tensor& prob_slot);
  void clear_prepared();
  // Whether routes at (step, training) are in the warm-up, and in the soft warm-up (every lego on).
  bool warming_up(std::int64_t step, bool training) const { return training && step < m_routing.warmup_steps; }
  bool soft_warmup(std::int64_t step, bool training) const {
    return warming_up(step, training) && m_routing.warmup == RoutingOptions::Warmup::Soft;
  }
  // Entries a route can have (shared + L, soft warm-up) and L.
  int max_entries() const { return m_num_shared + m_num_legos; }
  int num_routed() const { return m_num_legos; }
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
  // Task's route from logits z.
  Route compute_route(int task, std::vector<float> z, std::int64_t step, bool training) const;

  std::string m_layer;
  int m_num_legos = 0, m_top_k = 0, m_num_shared = 0;
  RoutingOptions m_routing;
  std::vector<Parameter> m_logits;              // per task, on the network's device
  std::vector<std::vector<float>> m_host_copy;  // their host copy (set_copy)
  struct Prepared {
    bool valid = false;
    std::int64_t step = 0;
    bool training = false;
    std::vector<float> logits;  // what routing read when it was prepared
    Route route;
  };
  std::vector<Prepared> m_prepared;  // per task
};

// What routing consumers see of a lego layer of any type (the residual LegoLayer, the transformer's
// MlpLegoLayer): the routing statistics, the report's heat maps, fine-tuning's probe, the host
// copies of the router logits.
class RoutedLayer {
 public:
  virtual ~RoutedLayer() = default;
  virtual const std::string& name() const = 0;
  virtual Route route(int task, std::int64_t step, bool training) const = 0;
  virtual Router& routing() = 0;
  virtual Parameter& router(int task) = 0;
  virtual int num_tasks() const = 0;
  virtual int num_legos_total() const = 0;  // shared + routed
  virtual void set_router_copy(int task, std::vector<float> logits) = 0;
  virtual float apply_balance(const std::vector<int>& tasks) = 0;
};

// The routing values of a step in memory (core/graph.hpp: a replayed graph reruns its kernels with
// the parameters of the capture, so the gates and probabilities, which change every step, are read
// from a table): for each (layer, task) a fixed slot of max_entries gates then L probabilities, in a
// device table allocated once (fixed addresses, which a graph bakes in) on the routers' device and
// written by ONE copy from a host staging table (page-locked on CUDA).
//
// Staging: two host tables used in turn; before one is rewritten, the copy that last read it must be
// done. A step syncs once (Network::end_step), so the copy of two calls ago always is: it is checked
// with an event (cuda::event_done), and waited for (a counted sync) only if it is not.
class RouteTable {
 public:
  RouteTable() = default;
  ~RouteTable();
  RouteTable(const RouteTable&) = delete;
  RouteTable& operator=(const RouteTable&) = delete;

  // Computes the route of every layer for each of `tasks` at (step, training) with the host code
  // (Router::route), writes their gates and probabilities to the table with one copy on `s`, and
  // hands each router its prepared routes (earlier ones dropped). The layers must be the same (same
  // order and sizes) on every call: the layout is fixed by the first. Not while a graph captures.
  // Returns the routing key: for each layer, for each task in order, the route's lego indices, then
  // -2 for a soft warm-up route (every lego active, gated by the probabilities) or -1 for a top-k one.
  // Equal keys (for the same tasks): the same kernels with the same parameters; only table values differ.
  std::vector<int> prepare(const std::vector<RoutedLayer*>& layers, const std::vector<int>& tasks, std::int64_t step,
                           bool training, const Stream& s);
  // The device table (undefined before the first prepare), for tests.
  const Tensor& table() const { return m_table; }

 private:
  struct Slots {
    std::int64_t base = 0;  // the layer's first slot
    std::int64_t entries = 0, legos = 0, tasks = 0;
    friend bool operator==(const Slots&, const Slots&) = default;
  };
  std::vector<Slots> m_layout;
  Tensor m_table;
  Tensor m_staging[2];
  cuda::Event m_copied[2];  // on CUDA: recorded after each staging table's copy (handle null: none yet)
  int m_next = 0;
};

}  // namespace gppf::nn
