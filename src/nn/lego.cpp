#include "src/nn/lego.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>

#include "kernels/elementwise.hpp"
#include "kernels/routing.hpp"
#include "src/nn/lego_strategy.hpp"

namespace gppf::nn {

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

void Bottleneck::collect_buffers(std::vector<Buffer>& out) {
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
    : m_name(name), m_spec(spec), m_router(name, spec.num_legos, spec.top_k, spec.num_shared, num_tasks, routing) {
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
  tag_owners();
  m_strategy = make_merged_strategy();
}

LegoLayer::~LegoLayer() = default;

void LegoLayer::set_index(int index) {
  m_index = index;
  tag_owners();
}

void LegoLayer::tag_owners() {
  const int shared = m_spec.num_shared;
  for (int i = 0; i < static_cast<int>(m_legos.size()); ++i)
    set_owner(*m_legos[static_cast<std::size_t>(i)], i < shared ? Owner{Owner::Kind::Shared, m_index, i, -1}
                                                                : Owner{Owner::Kind::Lego, m_index, i - shared, -1});
  if (m_proj) {
    set_owner(*m_proj, Owner{Owner::Kind::Shared, m_index, -1, -1});
    set_owner(*m_proj_bn, Owner{Owner::Kind::Shared, m_index, -1, -1});
  }
  m_router.tag_owners(m_index);
}

void LegoLayer::set_strategy(std::shared_ptr<LegoStrategy> strategy) {
  GPPF_CHECK(strategy, m_name, ": no lego strategy");
  m_strategy = std::move(strategy);
}

std::int64_t LegoLayer::stale_router_reads() { return Router::stale_reads(); }

Route LegoLayer::route(int task, std::int64_t step, bool training) const {
  return m_router.route(task, step, training);
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

LegoLayer::Output LegoLayer::forward(const RunState& rs, const Tensor& x, std::int64_t step) {
  if (x.defined())
    GPPF_CHECK(x.ndim() == 4 && x.dim(3) == m_spec.in_channels, m_name, ": input expected [N,H,W,", m_spec.in_channels,
               "], got ", x.desc());
  else
    GPPF_CHECK(m_strategy->serves_without_input(), m_name, ": forward without an input (", m_strategy->name(),
               " strategy)");
  Output out;
  out.y = strategy_for(rs).forward(*this, rs, x, step, out.saved);
  return out;
}

Tensor LegoLayer::backward(const RunState& rs, const Tensor& dy, std::unique_ptr<LegoContext> saved) {
  GPPF_CHECK(saved, m_name, ": backward without a training forward");
  return strategy_for(rs).backward(*this, rs, dy, *saved);
}

LegoStrategy& LegoLayer::strategy_for(const RunState& rs) const {
  if (rs.segments.empty()) return *m_strategy;
  static const std::shared_ptr<LegoStrategy> batched = make_batched_strategy();
  return *batched;
}

void LegoLayer::accumulate_router_grad(int task, const Route& route, const Tensor& dgate, const Stream& s) {
  m_router.accumulate_grad(task, route, dgate, s);
}

void LegoLayer::accumulate_router_grad(int task, const Route& route, const std::vector<float>& dgate) {
  m_router.accumulate_grad(task, route, dgate);
}

void LegoLayer::set_router_copy(int task, std::vector<float> logits) { m_router.set_copy(task, std::move(logits)); }

float LegoLayer::apply_balance(const std::vector<int>& tasks) { return m_router.apply_balance(tasks); }

void LegoLayer::collect_parameters(std::vector<Parameter*>& out) {
  for (auto& lego : m_legos) lego->collect_parameters(out);
  if (m_proj) {
    m_proj->collect_parameters(out);
    m_proj_bn->collect_parameters(out);
  }
  m_router.collect_parameters(out);
}

void LegoLayer::collect_buffers(std::vector<Buffer>& out) {
  for (auto& lego : m_legos) lego->collect_buffers(out);
  if (m_proj_bn) m_proj_bn->collect_buffers(out);
}

}  // namespace gppf::nn
