#include "src/nn/lego.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/elementwise.hpp"
#include "src/dist/exchange.hpp"
#include "src/nn/merged_legos.hpp"

namespace gppf::nn {
namespace {

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::vector<float> softmax(const std::vector<float>& z) {
  std::vector<float> p(z.size());
  if (z.empty()) return p;
  const float m = *std::max_element(z.begin(), z.end());
  double sum = 0;
  for (std::size_t i = 0; i < z.size(); ++i) sum += p[i] = std::exp(z[i] - m);
  for (auto& v : p) v = static_cast<float>(v / sum);
  return p;
}

float read_scalar(const Tensor& t) { return t.to_float_vector().at(0); }

// Adds `delta` to a router's gradient, the first writer of a step overwriting. Routers are a few
// floats: on a GPU they go through the host (one small copy each way, after the lego backward).
void add_router_grad(Parameter& router, const std::vector<double>& delta) {
  const bool overwrite = router.take_grad_mode() == kernels::GradMode::Overwrite;
  std::vector<float> g = overwrite ? std::vector<float>(delta.size(), 0.0f) : router.grad.to_float_vector();
  for (std::size_t i = 0; i < delta.size(); ++i) g[i] += static_cast<float>(delta[i]);
  if (router.grad.device().is_host()) {
    std::copy(g.begin(), g.end(), router.grad.data_as<float>());
  } else {
    router.grad.copy_from(Tensor::from_vector(router.grad.shape(), g));
  }
}

}  // namespace

Bottleneck::Bottleneck(const std::string& name, int in_channels, int width, int out_channels, int stride, int num_tasks,
                       std::mt19937_64& rng)
    : m_conv1(name + ".conv1", {in_channels, width, 1, 1, 0, 1, false}, rng),
      m_conv2(name + ".conv2", {width, width, 3, stride, 1, 1, false}, rng),
      m_conv3(name + ".conv3", {width, out_channels, 1, 1, 0, 1, false}, rng),
      m_bn1(name + ".bn1", width, num_tasks, true),
      m_bn2(name + ".bn2", width, num_tasks, true),
      m_bn3(name + ".bn3", out_channels, num_tasks, false) {}

Tensor Bottleneck::forward(const RunState& rs, const Tensor& x) {
  Tensor h = m_bn1.forward(rs, m_conv1.forward(rs, x));
  h = m_bn2.forward(rs, m_conv2.forward(rs, h));
  return m_bn3.forward(rs, m_conv3.forward(rs, h));
}

void Bottleneck::backward(const RunState& rs, const Tensor& dy, Tensor& dx, kernels::GradMode dx_mode) {
  Tensor d = m_bn3.backward(rs, dy);
  Tensor dh2 = Tensor::empty(m_bn2.input_shape(), d.dtype(), d.device());
  m_conv3.backward(rs, d, &dh2, kernels::GradMode::Overwrite);
  d = m_bn2.backward(rs, dh2);
  Tensor dh1 = Tensor::empty(m_bn1.input_shape(), d.dtype(), d.device());
  m_conv2.backward(rs, d, &dh1, kernels::GradMode::Overwrite);
  d = m_bn1.backward(rs, dh1);
  m_conv1.backward(rs, d, &dx, dx_mode);
}

Bottleneck::Saved Bottleneck::take_saved() {
  return {m_conv1.take_saved(), m_conv2.take_saved(), m_conv3.take_saved(),
          m_bn1.take_saved(),   m_bn2.take_saved(),   m_bn3.take_saved()};
}

void Bottleneck::restore_saved(Saved s) {
  m_conv1.restore_saved(std::move(s.c1));
  m_conv2.restore_saved(std::move(s.c2));
  m_conv3.restore_saved(std::move(s.c3));
  m_bn1.restore_saved(std::move(s.b1));
  m_bn2.restore_saved(std::move(s.b2));
  m_bn3.restore_saved(std::move(s.b3));
}

void Bottleneck::collect_parameters(std::vector<Parameter*>& out) {
  m_conv1.collect_parameters(out);
  m_bn1.collect_parameters(out);
  m_conv2.collect_parameters(out);
  m_bn2.collect_parameters(out);
  m_conv3.collect_parameters(out);
  m_bn3.collect_parameters(out);
}

void Bottleneck::collect_buffers(std::vector<NamedTensor>& out) {
  m_bn1.collect_buffers(out);
  m_bn2.collect_buffers(out);
  m_bn3.collect_buffers(out);
}

std::int64_t Bottleneck::macs(const Shape& x) const {
  const Shape h1 = m_conv1.output_shape(x);
  const Shape h2 = m_conv2.output_shape(h1);
  return m_conv1.macs(x) + m_conv2.macs(h1) + m_conv3.macs(h2);
}

LegoLayer::LegoLayer(const std::string& name, const LegoLayerSpec& spec, int num_tasks, const RoutingOptions& routing,
                     std::mt19937_64& rng)
    : m_name(name), m_spec(spec), m_routing(routing) {
  GPPF_CHECK(spec.num_legos >= 1 && spec.top_k >= 1 && spec.top_k <= spec.num_legos, name, ": top_k ", spec.top_k,
             " must be in [1, num_legos = ", spec.num_legos, "]");
  GPPF_CHECK(spec.num_shared >= 0 && spec.lego_width > 0, name, ": num_shared ", spec.num_shared, " and lego_width ",
             spec.lego_width, " must be >= 0 and > 0");
  const int total = spec.num_shared + spec.num_legos;
  for (int i = 0; i < total; ++i) {
    const std::string lego = i < spec.num_shared ? str(name, ".shared", i) : str(name, ".lego", i - spec.num_shared);
    m_legos.push_back(std::make_unique<Bottleneck>(lego, spec.in_channels, spec.lego_width, spec.out_channels,
                                                   spec.stride, num_tasks, rng));
  }
  if (spec.stride != 1 || spec.in_channels != spec.out_channels) {
    m_proj = std::make_unique<Conv2d>(name + ".proj",
                                      ConvSpec{spec.in_channels, spec.out_channels, 1, spec.stride, 0, 1, false}, rng);
    m_proj_bn = std::make_unique<BatchNorm>(name + ".proj_bn", spec.out_channels, num_tasks, false);
  }
  for (int t = 0; t < num_tasks; ++t) {
    std::mt19937_64 task_rng(fnv1a(name) ^ (0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(t + 1)));
    std::normal_distribution<float> dist(0.0f, routing.init_std);
    Tensor logits = Tensor::empty({spec.num_legos}, DType::F32);
    for (int i = 0; i < spec.num_legos; ++i) logits.data_as<float>()[i] = dist(task_rng);
    m_router.push_back(make_parameter(str(name, ".router.task", t), logits, false));
  }
}

LegoLayer::~LegoLayer() = default;

Route LegoLayer::route(int task, std::int64_t step, bool training) const {
  GPPF_CHECK(task >= 0 && task < static_cast<int>(m_router.size()), m_name, ": task ", task, " has no router");
  std::vector<float> z = m_router[static_cast<std::size_t>(task)].value.to_float_vector();
  Route r;
  for (int i = 0; i < m_spec.num_shared; ++i) {
    r.legos.push_back(i);
    r.gates.push_back(1.0f);
    r.routed.push_back(-1);
  }
  const bool warm = training && step < m_routing.warmup_steps;
  if (warm && m_routing.warmup == RoutingOptions::Warmup::Soft) {
    const auto g = softmax(z);
    for (int i = 0; i < m_spec.num_legos; ++i) {
      r.legos.push_back(m_spec.num_shared + i);
      r.gates.push_back(g[static_cast<std::size_t>(i)]);
      r.routed.push_back(i);
    }
    return r;
  }
  if (warm && m_routing.warmup == RoutingOptions::Warmup::Noisy && m_routing.noise_std > 0) {
    std::mt19937_64 rng(fnv1a(m_name) ^ (static_cast<std::uint64_t>(step) * 0x9e3779b97f4a7c15ull) ^
                        (static_cast<std::uint64_t>(task) << 48));
    std::normal_distribution<float> noise(0.0f, m_routing.noise_std);
    for (auto& v : z) v += noise(rng);
  }
  std::vector<int> order(static_cast<std::size_t>(m_spec.num_legos));
  std::iota(order.begin(), order.end(), 0);
  // Highest logit first; ties to the lower index so that routing is deterministic.
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return z[static_cast<std::size_t>(a)] > z[static_cast<std::size_t>(b)]; });
  order.resize(static_cast<std::size_t>(m_spec.top_k));
  std::sort(order.begin(), order.end());
  std::vector<float> zs;
  for (int i : order) zs.push_back(z[static_cast<std::size_t>(i)]);
  const auto g = softmax(zs);
  for (std::size_t j = 0; j < order.size(); ++j) {
    r.legos.push_back(m_spec.num_shared + order[j]);
    r.gates.push_back(g[j]);
    r.routed.push_back(order[j]);
  }
  return r;
}

Shape LegoLayer::output_shape(const Shape& x) const {
  const Shape mid = kernels::conv2d_output_shape(kernels::Conv2dParams{m_spec.stride, m_spec.stride, 1, 1},
                                                 Shape{x[0], x[1], x[2], m_spec.lego_width},
                                                 Shape{m_spec.lego_width, 3, 3, m_spec.lego_width});
  return {mid[0], mid[1], mid[2], m_spec.out_channels};
}

std::int64_t LegoLayer::macs(const Shape& x, int active_legos) const {
  std::int64_t total = m_legos.front()->macs(x) * active_legos;
  if (m_proj) total += m_proj->macs(x);
  return total;
}

Tensor LegoLayer::shortcut_forward(const RunState& rs, const Tensor& x) {
  if (m_proj) return m_proj_bn->forward(rs, m_proj->forward(rs, x));
  Tensor acc = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::axpby(1.0f, x, 0.0f, acc, rs.stream);
  return acc;
}

Tensor LegoLayer::shortcut_backward(const RunState& rs, const Tensor& da) {
  Tensor dx = Tensor::empty(m_x_shape, da.dtype(), da.device());
  if (m_proj) {
    Tensor dp = m_proj_bn->backward(rs, da);
    m_proj->backward(rs, dp, &dx, kernels::GradMode::Overwrite);
  } else {
    kernels::axpby(1.0f, da, 0.0f, dx, rs.stream);
  }
  return dx;
}

Tensor LegoLayer::forward(const RunState& rs, const Tensor& x, std::int64_t step) {
  if (rs.exchange) return forward_exchange(rs, x);
  GPPF_CHECK(x.ndim() == 4 && x.dim(3) == m_spec.in_channels, m_name, ": input expected [N,H,W,", m_spec.in_channels,
             "], got ", x.desc());
  Route r = route(rs.task, step, rs.training);
  if (m_merge && r.legos.size() >= 2 && x.device().is_host() && x.dtype() == DType::F32 && !rs.bn_sync) {
    std::vector<Bottleneck*> legos;
    for (int i : r.legos) legos.push_back(m_legos[static_cast<std::size_t>(i)].get());
    if (!m_merged) m_merged = std::make_unique<MergedLegos>();
    Tensor y = m_merged->forward(rs, x, std::move(legos), r.gates, m_proj.get(), m_proj_bn.get());
    if (rs.training) m_route = std::move(r);
    return y;
  }
  Tensor acc = shortcut_forward(rs, x);
  std::vector<Tensor> outputs;
  for (std::size_t j = 0; j < r.legos.size(); ++j) {
    Tensor o = m_legos[static_cast<std::size_t>(r.legos[j])]->forward(rs, x);
    kernels::axpby(r.gates[j], o, 1.0f, acc, rs.stream);
    if (rs.training) outputs.push_back(std::move(o));
  }
  Tensor y = Tensor::empty(acc.shape(), acc.dtype(), acc.device());
  kernels::relu_fwd(acc, y, rs.stream);
  if (rs.training) {
    m_route = std::move(r);
    m_outputs = std::move(outputs);
    m_y = y;
    m_x_shape = x.shape();
  }
  return y;
}

Tensor LegoLayer::backward(const RunState& rs, const Tensor& dy) {
  if (rs.exchange) return backward_exchange(rs, dy);
  if (m_merged && m_merged->saved()) {
    std::vector<float> dgate;
    Tensor dx = m_merged->backward(rs, dy, dgate);
    accumulate_router_grad(rs.task, dgate);
    return dx;
  }
  GPPF_CHECK(m_y.defined(), m_name, ": backward without a training forward");
  Tensor da = Tensor::empty(m_y.shape(), dy.dtype(), dy.device());
  kernels::relu_bwd(m_y, dy, da, kernels::GradMode::Overwrite, rs.stream);
  Tensor dx = shortcut_backward(rs, da);
  std::vector<float> dgate(m_route.legos.size());
  Tensor dot_out = Tensor::empty({1}, DType::F32, dy.device());
  Tensor scaled = Tensor::empty(da.shape(), da.dtype(), da.device());
  for (std::size_t j = 0; j < m_route.legos.size(); ++j) {
    if (m_route.routed[j] >= 0) {
      kernels::dot(da, m_outputs[j], dot_out, kernels::GradMode::Overwrite, rs.stream);
      dgate[j] = read_scalar(dot_out);
    }
    kernels::axpby(m_route.gates[j], da, 0.0f, scaled, rs.stream);
    m_legos[static_cast<std::size_t>(m_route.legos[j])]->backward(rs, scaled, dx, kernels::GradMode::Accumulate);
  }
  accumulate_router_grad(rs.task, dgate);
  m_outputs.clear();
  m_y = Tensor();
  return dx;
}

void LegoLayer::accumulate_router_grad(int task, const std::vector<float>& dgate) {
  // Gates are the softmax of the selected logits, so dz_j = g_j (dg_j - sum_i g_i dg_i).
  double inner = 0;
  for (std::size_t j = 0; j < m_route.legos.size(); ++j)
    if (m_route.routed[j] >= 0) inner += static_cast<double>(m_route.gates[j]) * dgate[j];
  std::vector<double> dz(static_cast<std::size_t>(m_spec.num_legos), 0.0);
  for (std::size_t j = 0; j < m_route.legos.size(); ++j)
    if (m_route.routed[j] >= 0)
      dz[static_cast<std::size_t>(m_route.routed[j])] += static_cast<float>(m_route.gates[j] * (dgate[j] - inner));
  add_router_grad(m_router[static_cast<std::size_t>(task)], dz);
}

// ---- expert parallelism ------------------------------------------------------------------------

namespace {

Tensor from_floats(const float* data, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::F32);
  std::copy(data, data + t.numel(), t.data_as<float>());
  return t;
}

void append(std::vector<float>& buf, const Tensor& t) {
  const float* p = t.data_as<float>();
  buf.insert(buf.end(), p, p + t.numel());
}

}  // namespace

// Where entry j of member p's route runs: shared legos where the task is, routed ones on their holder.
int LegoLayer::where(const dist::LegoExchange& ex, int p, std::size_t j) const {
  const int r = m_routes[static_cast<std::size_t>(p)].routed[j];
  return r < 0 ? p : ex.owner(r);
}

// Whether member p's task runs some of its legos on member q.
bool LegoLayer::needs(const dist::LegoExchange& ex, int p, int q) const {
  for (std::size_t j = 0; j < m_routes[static_cast<std::size_t>(p)].legos.size(); ++j)
    if (where(ex, p, j) == q) return true;
  return false;
}

Tensor LegoLayer::forward_exchange(const RunState& rs, const Tensor& x) {
  dist::LegoExchange& ex = *rs.exchange;
  const int P = ex.size(), me = ex.me();
  const bool mine = ex.peer(me).task >= 0;
  if (mine)
    GPPF_CHECK(x.ndim() == 4 && x.dim(3) == m_spec.in_channels && x.device().is_host() && x.dtype() == DType::F32,
               m_name, ": expert-parallel input expected host f32 [N,H,W,", m_spec.in_channels, "], got ", x.desc());
  m_routes.assign(static_cast<std::size_t>(P), Route{});
  for (int p = 0; p < P; ++p)
    if (ex.peer(p).task >= 0)
      m_routes[static_cast<std::size_t>(p)] = route(ex.peer(p).task, ex.peer(p).step, ex.peer(p).training);
  // Dispatch: my input to every member holding some of my legos; the inputs of the members whose legos I hold.
  std::vector<std::int64_t> sc(static_cast<std::size_t>(P), 0), rc(static_cast<std::size_t>(P), 0);
  std::vector<float> send;
  for (int q = 0; q < P; ++q) {
    if (q == me) continue;
    if (mine && needs(ex, me, q)) {
      sc[static_cast<std::size_t>(q)] = x.numel();
      append(send, x);
    }
    if (ex.peer(q).task >= 0 && needs(ex, q, me))
      rc[static_cast<std::size_t>(q)] = shape_numel(ex.layer_input(q, m_index));
  }
  std::vector<std::int64_t> at;
  const std::vector<float> recv = ex.alltoallv(send, sc, rc, at, m_name + " forward dispatch");

  // Run every lego call of the round here, member by member (the same order on every replica, which
  // synchronised BN relies on).
  m_calls.clear();
  Tensor acc;
  std::vector<Tensor> partial(static_cast<std::size_t>(P));
  for (int p = 0; p < P; ++p) {
    const dist::PeerWork& peer = ex.peer(p);
    if (peer.task < 0) continue;
    Tensor xin;
    Tensor* sum = nullptr;
    if (p == me) {
      xin = x;
      acc = shortcut_forward(rs, x);
      sum = &acc;
    } else {
      if (rc[static_cast<std::size_t>(p)] == 0) continue;
      xin = from_floats(recv.data() + at[static_cast<std::size_t>(p)], ex.layer_input(p, m_index));
      sum = &partial[static_cast<std::size_t>(p)];
    }
    RunState prs = rs;
    prs.task = peer.task;
    prs.training = peer.training;
    prs.bn_momentum = peer.bn_momentum;
    if (!peer.training) prs.bn_sync = nullptr;
    const Route& r = m_routes[static_cast<std::size_t>(p)];
    for (std::size_t j = 0; j < r.legos.size(); ++j) {
      if (where(ex, p, j) != me) continue;
      Bottleneck& lego = *m_legos[static_cast<std::size_t>(r.legos[j])];
      Tensor o = lego.forward(prs, xin);
      if (!sum->defined()) {
        *sum = Tensor::empty(o.shape(), o.dtype(), o.device());
        kernels::axpby(r.gates[j], o, 0.0f, *sum, rs.stream);
      } else {
        kernels::axpby(r.gates[j], o, 1.0f, *sum, rs.stream);
      }
      if (peer.training && peer.backward) m_calls.push_back({p, j, lego.take_saved(), o});
    }
  }
  // Combine: the gate-weighted sums go back to the members they belong to.
  std::vector<std::int64_t> sc2(static_cast<std::size_t>(P), 0), rc2(static_cast<std::size_t>(P), 0);
  std::vector<float> send2;
  for (int p = 0; p < P; ++p) {
    if (p == me) continue;
    if (rc[static_cast<std::size_t>(p)] > 0) {
      sc2[static_cast<std::size_t>(p)] = partial[static_cast<std::size_t>(p)].numel();
      append(send2, partial[static_cast<std::size_t>(p)]);
    }
    if (sc[static_cast<std::size_t>(p)] > 0) rc2[static_cast<std::size_t>(p)] = shape_numel(output_shape(x.shape()));
  }
  const std::vector<float> recv2 = ex.alltoallv(send2, sc2, rc2, at, m_name + " forward combine");
  if (!mine) return Tensor();
  for (int q = 0; q < P; ++q)
    if (rc2[static_cast<std::size_t>(q)] > 0)
      kernels::axpby(1.0f, from_floats(recv2.data() + at[static_cast<std::size_t>(q)], acc.shape()), 1.0f, acc,
                     rs.stream);
  Tensor y = Tensor::empty(acc.shape(), acc.dtype(), acc.device());
  kernels::relu_fwd(acc, y, rs.stream);
  if (ex.peer(me).training && ex.peer(me).backward) {
    m_route = m_routes[static_cast<std::size_t>(me)];
    m_y = y;
    m_x_shape = x.shape();
  }
  return y;
}

Tensor LegoLayer::backward_exchange(const RunState& rs, const Tensor& dy) {
  dist::LegoExchange& ex = *rs.exchange;
  const int P = ex.size(), me = ex.me();
  const bool mine = ex.peer(me).task >= 0 && ex.peer(me).backward;
  Tensor da, dx;
  if (mine) {
    GPPF_CHECK(m_y.defined() && dy.defined(), m_name, ": backward without a training forward");
    da = Tensor::empty(m_y.shape(), dy.dtype(), dy.device());
    kernels::relu_bwd(m_y, dy, da, kernels::GradMode::Overwrite, rs.stream);
    dx = shortcut_backward(rs, da);
  }
  // Dispatch the output gradient to the members that ran my legos; receive the ones of the members I served.
  std::vector<std::int64_t> sc(static_cast<std::size_t>(P), 0), rc(static_cast<std::size_t>(P), 0);
  std::vector<float> send;
  for (int q = 0; q < P; ++q) {
    if (q == me) continue;
    if (mine && needs(ex, me, q)) {
      sc[static_cast<std::size_t>(q)] = da.numel();
      append(send, da);
    }
    const dist::PeerWork& pq = ex.peer(q);
    if (pq.task >= 0 && pq.backward && needs(ex, q, me))
      rc[static_cast<std::size_t>(q)] = shape_numel(output_shape(ex.layer_input(q, m_index)));
  }
  std::vector<std::int64_t> roff;
  const std::vector<float> recv = ex.alltoallv(send, sc, rc, roff, m_name + " backward dispatch");

  // Every call of the forward, in the same order: gate gradient, then the lego's backward.
  std::vector<Tensor> dxs(static_cast<std::size_t>(P)), das(static_cast<std::size_t>(P));
  std::vector<std::vector<float>> dgates(static_cast<std::size_t>(P));
  for (int p = 0; p < P; ++p)
    dgates[static_cast<std::size_t>(p)].assign(m_routes[static_cast<std::size_t>(p)].legos.size(), 0.0f);
  Tensor dot_out = Tensor::empty({1}, DType::F32);
  for (Call& call : m_calls) {
    const auto p = static_cast<std::size_t>(call.member);
    const Route& r = m_routes[p];
    if (!das[p].defined())
      das[p] = call.member == me
                   ? da
                   : from_floats(recv.data() + roff[p], output_shape(ex.layer_input(call.member, m_index)));
    if (r.routed[call.entry] >= 0) {
      kernels::dot(das[p], call.out, dot_out, kernels::GradMode::Overwrite, rs.stream);
      dgates[p][call.entry] = read_scalar(dot_out);
    }
    Tensor scaled = Tensor::empty(das[p].shape(), das[p].dtype(), das[p].device());
    kernels::axpby(r.gates[call.entry], das[p], 0.0f, scaled, rs.stream);
    RunState prs = rs;
    prs.task = ex.peer(call.member).task;
    Bottleneck& lego = *m_legos[static_cast<std::size_t>(r.legos[call.entry])];
    lego.restore_saved(std::move(call.saved));
    if (call.member == me) {
      lego.backward(prs, scaled, dx, kernels::GradMode::Accumulate);
    } else if (!dxs[p].defined()) {
      dxs[p] = Tensor::empty(ex.layer_input(call.member, m_index), DType::F32);
      lego.backward(prs, scaled, dxs[p], kernels::GradMode::Overwrite);
    } else {
      lego.backward(prs, scaled, dxs[p], kernels::GradMode::Accumulate);
    }
  }
  m_calls.clear();
  // Combine: input gradients and gate gradients back to their members.
  std::vector<std::int64_t> sc2(static_cast<std::size_t>(P), 0), rc2(static_cast<std::size_t>(P), 0);
  std::vector<float> send2;
  for (int p = 0; p < P; ++p) {
    if (p == me) continue;
    const auto pi = static_cast<std::size_t>(p);
    if (rc[pi] > 0) {
      sc2[pi] = dxs[pi].numel() + static_cast<std::int64_t>(dgates[pi].size());
      append(send2, dxs[pi]);
      send2.insert(send2.end(), dgates[pi].begin(), dgates[pi].end());
    }
    if (sc[pi] > 0) rc2[pi] = dx.numel() + static_cast<std::int64_t>(m_route.legos.size());
  }
  std::vector<std::int64_t> at;
  const std::vector<float> recv2 = ex.alltoallv(send2, sc2, rc2, at, m_name + " backward combine");
  if (!mine) return Tensor();
  std::vector<float>& dgate = dgates[static_cast<std::size_t>(me)];
  for (int q = 0; q < P; ++q) {
    if (rc2[static_cast<std::size_t>(q)] == 0) continue;
    const float* part = recv2.data() + at[static_cast<std::size_t>(q)];
    kernels::axpby(1.0f, from_floats(part, dx.shape()), 1.0f, dx, rs.stream);
    for (std::size_t j = 0; j < dgate.size(); ++j) dgate[j] += part[dx.numel() + static_cast<std::int64_t>(j)];
  }
  accumulate_router_grad(rs.task, dgate);
  m_y = Tensor();
  return dx;
}

float LegoLayer::apply_balance(const std::vector<int>& tasks) {
  if (m_routing.balance_weight <= 0 || tasks.empty()) return 0.0f;
  // loss = w * L * sum_i P_i^2 with P_i the mean over tasks of softmax(logits_t)_i: smallest when the
  // tasks together spread their routing probability evenly over the legos.
  const std::size_t L = static_cast<std::size_t>(m_spec.num_legos);
  const double T = static_cast<double>(tasks.size());
  std::vector<std::vector<float>> p;
  std::vector<double> P(L, 0.0);
  for (int t : tasks) {
    p.push_back(softmax(m_router[static_cast<std::size_t>(t)].value.to_float_vector()));
    for (std::size_t i = 0; i < L; ++i) P[i] += p.back()[i] / T;
  }
  const double w = m_routing.balance_weight * static_cast<double>(L);
  double loss = 0;
  for (double v : P) loss += w * v * v;
  for (std::size_t n = 0; n < tasks.size(); ++n) {
    double inner = 0;
    for (std::size_t i = 0; i < L; ++i) inner += p[n][i] * (2 * w * P[i] / T);
    std::vector<double> dz(L);
    for (std::size_t i = 0; i < L; ++i) dz[i] = static_cast<float>(p[n][i] * (2 * w * P[i] / T - inner));
    add_router_grad(m_router[static_cast<std::size_t>(tasks[n])], dz);
  }
  return static_cast<float>(loss);
}

void LegoLayer::collect_parameters(std::vector<Parameter*>& out) {
  for (auto& lego : m_legos) lego->collect_parameters(out);
  if (m_proj) {
    m_proj->collect_parameters(out);
    m_proj_bn->collect_parameters(out);
  }
  for (auto& r : m_router) out.push_back(&r);
}

void LegoLayer::collect_buffers(std::vector<NamedTensor>& out) {
  for (auto& lego : m_legos) lego->collect_buffers(out);
  if (m_proj_bn) m_proj_bn->collect_buffers(out);
}

}  // namespace gppf::nn
