#include "src/nn/router.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <random>

#include "core/graph.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/routing.hpp"

namespace gppf::nn {
namespace {

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::atomic<std::int64_t> g_stale_reads{0};

std::vector<float> softmax(const std::vector<float>& z) {
  std::vector<float> p(z.size());
  if (z.empty()) return p;
  const float m = *std::max_element(z.begin(), z.end());
  double sum = 0;
  for (std::size_t i = 0; i < z.size(); ++i) sum += p[i] = std::exp(z[i] - m);
  for (auto& v : p) v = static_cast<float>(v / sum);
  return p;
}

}  // namespace

Router::Router(std::string layer, int num_legos, int top_k, int num_shared, int num_tasks,
               const RoutingOptions& routing)
    : m_layer(std::move(layer)), m_num_legos(num_legos), m_top_k(top_k), m_num_shared(num_shared), m_routing(routing) {
  for (int t = 0; t < num_tasks; ++t) {
    std::mt19937_64 task_rng(fnv1a(m_layer) ^ (0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(t + 1)));
    std::normal_distribution<float> dist(0.0f, routing.init_std);
    Tensor logits = Tensor::empty({num_legos}, DType::F32);
    for (int i = 0; i < num_legos; ++i) logits.data_as<float>()[i] = dist(task_rng);
    m_logits.push_back(make_parameter(str(m_layer, ".router.task", t), logits, false));
    m_host_copy.push_back(logits.to_float_vector());
  }
  m_prepared.resize(static_cast<std::size_t>(num_tasks));
}

void Router::tag_owners(int layer_index) {
  for (std::size_t t = 0; t < m_logits.size(); ++t)
    m_logits[t].owner = Owner{Owner::Kind::Router, layer_index, -1, static_cast<int>(t)};
}

void Router::collect_parameters(std::vector<Parameter*>& out) {
  for (auto& r : m_logits) out.push_back(&r);
}

std::int64_t Router::stale_reads() { return g_stale_reads.load(); }

std::vector<float> Router::routed_logits(int task) const {
  // On a GPU the host copy (no sync); on the host the values themselves, and a copy that differs is
  // counted: a refresh (Network::parameters_changed) was missed, which a GPU run would route by.
  const auto ti = static_cast<std::size_t>(task);
  const Tensor& logits = m_logits[ti].value;
  if (!logits.device().is_host()) return m_host_copy[ti];
  std::vector<float> z = logits.to_float_vector();
  if (z != m_host_copy[ti]) ++g_stale_reads;
  return z;
}

Route Router::route(int task, std::int64_t step, bool training) const {
  GPPF_CHECK(task >= 0 && task < num_tasks(), m_layer, ": task ", task, " has no router");
  std::vector<float> z = routed_logits(task);
  // A prepared route only for its own step and mode, and only while the logits are those it came from.
  const Prepared& p = m_prepared[static_cast<std::size_t>(task)];
  if (p.valid && p.step == step && p.training == training && p.logits == z) return p.route;
  return compute_route(task, std::move(z), step, training);
}

const Route& Router::prepare(int task, std::int64_t step, bool training, const Tensor& gate_slot,
                             const Tensor& prob_slot) {
  GPPF_CHECK(task >= 0 && task < num_tasks(), m_layer, ": task ", task, " has no router");
  GPPF_CHECK(gate_slot.numel() == max_entries() && prob_slot.numel() == m_num_legos, m_layer, ": route table slots ",
             gate_slot.desc(), " and ", prob_slot.desc(), ", expected ", max_entries(), " and ", m_num_legos,
             " values");
  Prepared& p = m_prepared[static_cast<std::size_t>(task)];
  p.logits = routed_logits(task);
  p.route = compute_route(task, p.logits, step, training);
  p.route.gate_values = gate_slot.narrow0(0, static_cast<std::int64_t>(p.route.gates.size()));
  p.route.prob_values = prob_slot;
  p.step = step;
  p.training = training;
  p.valid = true;
  return p.route;
}

void Router::clear_prepared() {
  for (Prepared& p : m_prepared) p = Prepared();
}

Route Router::compute_route(int task, std::vector<float> z, std::int64_t step, bool training) const {
  Route r;
  for (int i = 0; i < m_num_shared; ++i) {
    r.legos.push_back(i);
    r.gates.push_back(1.0f);
    r.routed.push_back(-1);
  }
  const bool warm = warming_up(step, training);
  if (warm && m_routing.warmup == RoutingOptions::Warmup::Noisy && m_routing.noise_std > 0) {
    std::mt19937_64 rng(fnv1a(m_layer) ^ (static_cast<std::uint64_t>(step) * 0x9e3779b97f4a7c15ull) ^
                        (static_cast<std::uint64_t>(task) << 48));
    std::normal_distribution<float> noise(0.0f, m_routing.noise_std);
    for (auto& v : z) v += noise(rng);
  }
  r.probs = softmax(z);
  if (soft_warmup(step, training)) {
    for (int i = 0; i < m_num_legos; ++i) {
      r.legos.push_back(m_num_shared + i);
      r.gates.push_back(r.probs[static_cast<std::size_t>(i)]);
      r.routed.push_back(i);
    }
    return r;
  }
  std::vector<int> order(static_cast<std::size_t>(m_num_legos));
  std::iota(order.begin(), order.end(), 0);
  // Highest logit first; ties to the lower index so that routing is deterministic.
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return z[static_cast<std::size_t>(a)] > z[static_cast<std::size_t>(b)]; });
  order.resize(static_cast<std::size_t>(m_top_k));
  std::sort(order.begin(), order.end());
  for (int i : order) {
    r.legos.push_back(m_num_shared + i);
    r.gates.push_back(r.probs[static_cast<std::size_t>(i)]);
    r.routed.push_back(i);
  }
  return r;
}

void Router::accumulate_grad(int task, const Route& route, const Tensor& dgate, const Stream& s) {
  const auto L = static_cast<std::size_t>(m_num_legos);
  GPPF_CHECK(route.probs.size() == L, m_layer, ": route of task ", task, " has ", route.probs.size(),
             " router probabilities, expected ", L);
  Parameter& router = m_logits[static_cast<std::size_t>(task)];
  kernels::router_grad({route.routed, route.probs, route.prob_values}, dgate, router.grad, router.take_grad_mode(), s);
}

void Router::accumulate_grad(int task, const Route& route, const std::vector<float>& dgate) {
  const Tensor& grad = m_logits[static_cast<std::size_t>(task)].grad;
  const auto n = static_cast<std::int64_t>(dgate.size());
  const Tensor host = Tensor::from_vector({n}, dgate);
  accumulate_grad(task, route, grad.device().is_host() ? host : host.to(grad.device()), Stream::host());
}

void Router::set_copy(int task, std::vector<float> logits) {
  GPPF_CHECK(logits.size() == static_cast<std::size_t>(m_num_legos), m_layer, ": ", logits.size(),
             " router logits for task ", task, ", expected ", m_num_legos);
  m_host_copy.at(static_cast<std::size_t>(task)) = std::move(logits);
}

float Router::apply_balance(const std::vector<int>& tasks) {
  if (m_routing.balance_weight <= 0 || tasks.empty()) return 0.0f;
  // loss = w * L * sum_i P_i^2 with P_i the mean over tasks of softmax(logits_t)_i: smallest when the
  // tasks together spread their routing probability evenly over the legos.
  const std::size_t L = static_cast<std::size_t>(m_num_legos);
  const double T = static_cast<double>(tasks.size());
  std::vector<std::vector<float>> p;
  std::vector<double> P(L, 0.0);
  for (int t : tasks) {
    p.push_back(softmax(routed_logits(t)));
    for (std::size_t i = 0; i < L; ++i) P[i] += p.back()[i] / T;
  }
  const double w = m_routing.balance_weight * static_cast<double>(L);
  double loss = 0;
  for (double v : P) loss += w * v * v;
  for (std::size_t n = 0; n < tasks.size(); ++n) {
    double inner = 0;
    for (std::size_t i = 0; i < L; ++i) inner += p[n][i] * (2 * w * P[i] / T);
    std::vector<float> dz(L);
    for (std::size_t i = 0; i < L; ++i) dz[i] = static_cast<float>(p[n][i] * (2 * w * P[i] / T - inner));
    Parameter& router = m_logits[static_cast<std::size_t>(tasks[n])];
    kernels::add_router_values(dz, router.grad, router.take_grad_mode());
  }
  return static_cast<float>(loss);
}

void gated_axpby(const Route& r, std::size_t j, const Tensor& x, float beta, Tensor& y, const Stream& s) {
  if (r.gate_values.defined())
    kernels::axpby_scalar(r.gate_values.narrow0(static_cast<std::int64_t>(j), 1), x, beta, y, s);
  else
    kernels::axpby(r.gates.at(j), x, beta, y, s);
}

const float* gate_address(const Route& r, std::size_t j) {
  if (!r.gate_values.defined()) return nullptr;
  GPPF_CHECK(static_cast<std::int64_t>(j) < r.gate_values.numel(), "route entry ", j, " of ", r.gate_values.numel());
  return r.gate_values.data_as<float>() + j;
}

RouteTable::~RouteTable() {
  for (const cuda::Event& e : m_copied) cuda::destroy_event(e);
}

std::vector<int> RouteTable::prepare(const std::vector<RoutedLayer*>& layers, const std::vector<int>& tasks,
                                     std::int64_t step, bool training, const Stream& s) {
  GPPF_CHECK(!runtime::capturing(),
             "prepare_routes: not while a graph captures (its upload must run before each launch)");
  std::vector<Slots> layout;
  std::int64_t total = 0;
  for (RoutedLayer* l : layers) {
    const Router& r = l->routing();
    layout.push_back({total, r.max_entries(), r.num_routed(), r.num_tasks()});
    total += layout.back().tasks * (layout.back().entries + layout.back().legos);
  }
  std::vector<int> key;
  if (total == 0) return key;
  const Device device = layers.front()->routing().logits(0).value.device();
  if (!m_table.defined()) {
    // Allocated once: a captured graph keeps the table's address.
    m_layout = layout;
    m_table = Tensor::empty({total}, DType::F32, device);
    for (Tensor& t : m_staging) t = Tensor::empty({total}, DType::F32, Device::host(), device.is_cuda());
  } else {
    GPPF_CHECK(layout == m_layout && m_table.device() == device,
               "prepare_routes: the routed layers or their device changed since the route table was made; it "
               "serves one network on one device");
  }
  const int b = m_next;
  m_next ^= 1;
  cuda::Event& copied = m_copied[b];
  // The copy that last read this staging table was queued two calls ago; a step's sync has normally
  // passed it since.
  if (copied.handle && !cuda::event_done(copied)) cuda::event_synchronize(copied);
  Tensor& staging = m_staging[b];
  float* host = staging.data_as<float>();
  std::fill(host, host + total, 0.0f);
  for (std::size_t li = 0; li < layers.size(); ++li) {
    Router& router = layers[li]->routing();
    router.clear_prepared();
    const Slots& sl = m_layout[li];
    for (int task : tasks) {
      GPPF_CHECK(task >= 0 && task < sl.tasks, layers[li]->name(), ": task ", task, " has no router");
      const std::int64_t at = sl.base + task * (sl.entries + sl.legos);
      const Route& r = router.prepare(task, step, training, m_table.narrow0(at, sl.entries),
                                      m_table.narrow0(at + sl.entries, sl.legos));
      std::copy(r.gates.begin(), r.gates.end(), host + at);
      std::copy(r.probs.begin(), r.probs.end(), host + at + sl.entries);
      key.insert(key.end(), r.legos.begin(), r.legos.end());
      key.push_back(router.soft_warmup(step, training) ? -2 : -1);
    }
  }
  m_table.copy_from(staging, s);
  if (device.is_cuda()) {
    if (!copied.handle) copied = cuda::create_event(device.index);
    cuda::record_event(copied, s);
  }
  return key;
}

}  // namespace gppf::nn
