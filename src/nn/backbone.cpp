#include "src/nn/backbone.hpp"

#include <algorithm>

#include "kernels/cast.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/linear.hpp"
#include "kernels/pool.hpp"

namespace gppf::nn {

int BackboneSpec::lego_width(int channels) const { return std::max(1, channels / 4 / std::max(1, top_k)); }

BackboneSpec BackboneSpec::mini() {
  BackboneSpec s;
  s.name = "gppf-mini";
  s.stem_channels = 16;
  s.stages = {{32, 1, 1}, {64, 1, 2}, {128, 1, 2}};
  return s;
}

BackboneSpec BackboneSpec::vit_mini() {
  BackboneSpec s;
  s.name = "gppf-vit";
  VitSpec v;
  v.patch = 4;
  v.dim = 64;
  v.depth = 4;
  v.heads = 4;
  s.vit = v;
  return s;
}

BackboneSpec BackboneSpec::r50() {
  BackboneSpec s;
  s.name = "gppf-r50";
  s.stem_channels = 64;
  s.stem_kernel = 7;
  s.stem_stride = 2;
  s.stem_pool = true;
  s.stages = {{256, 3, 1}, {512, 4, 2}, {1024, 6, 2}, {2048, 3, 2}};
  return s;
}

namespace {
ColourConv stem_conv(const BackboneSpec& spec, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  return ColourConv("stem.conv", spec.stem_channels, spec.stem_kernel, spec.stem_stride, spec.stem_kernel / 2, rng);
}
}  // namespace

Stem::Stem(const BackboneSpec& spec, int num_tasks, std::uint64_t seed)
    : m_use_pool(spec.stem_pool), m_conv(stem_conv(spec, seed)), m_bn("stem.bn", spec.stem_channels, num_tasks, true) {
  m_pool = kernels::Pool2dParams{3, 3, 2, 2, 1, 1, false};
}

Shape Stem::output_shape(const Shape& x) const {
  const Shape y = m_conv.output_shape(x);
  return m_use_pool ? kernels::pool2d_output_shape(m_pool, y) : y;
}

std::int64_t Stem::macs(const Shape& x) const { return m_conv.macs(x); }

Tensor Stem::forward(const RunState& rs, const Tensor& x) {
  GPPF_CHECK(x.ndim() == 4 && (x.dim(3) == 1 || x.dim(3) == 3), "stem: input expected [N,H,W,1] or [N,H,W,3], got ",
             x.desc());
  Tensor y = m_bn.forward(rs, m_conv.forward(rs, x));
  if (!m_use_pool) return y;
  Tensor p = Tensor::empty(kernels::pool2d_output_shape(m_pool, y.shape()), y.dtype(), y.device());
  kernels::maxpool2d_fwd(m_pool, y, p, rs.stream);
  if (rs.training) {
    m_pool_in = y;
    m_pool_out = p;
  }
  return p;
}

void Stem::backward(const RunState& rs, const Tensor& dy_in) {
  Tensor dy = dy_in;
  if (m_use_pool) {
    GPPF_CHECK(m_pool_in.defined(), "stem: backward without a training forward");
    dy = Tensor::empty(m_pool_in.shape(), dy_in.dtype(), dy_in.device());
    kernels::maxpool2d_bwd(m_pool, m_pool_in, m_pool_out, dy_in, dy, rs.stream);
  }
  m_conv.backward(rs, m_bn.backward(rs, dy));
  m_pool_in = m_pool_out = Tensor();
}

void Stem::collect_parameters(std::vector<Parameter*>& out) {
  m_conv.collect_parameters(out);
  m_bn.collect_parameters(out);
}

void Stem::collect_buffers(std::vector<Buffer>& out) { m_bn.collect_buffers(out); }

Backbone::Backbone(const BackboneSpec& spec, int num_tasks, std::uint64_t seed)
    : m_spec(spec), m_stem(spec, num_tasks, seed) {
  if (spec.vit) {
    VitSpec v = *spec.vit;
    v.num_legos = spec.num_legos;
    v.top_k = spec.top_k;
    v.num_shared = spec.num_shared;
    v.routing = spec.routing;
    m_vit = std::make_unique<VitBackbone>(v, num_tasks, seed);
    m_stage_ends = {v.depth - 1};
    return;
  }
  GPPF_CHECK(!spec.stages.empty(), "model.stages: at least one stage is needed");
  std::mt19937_64 rng(seed + 1);
  int in = spec.stem_channels;
  for (std::size_t s = 0; s < spec.stages.size(); ++s) {
    const StageSpec& st = spec.stages[s];
    GPPF_CHECK(st.channels > 0 && st.blocks > 0 && st.stride >= 1, "model.stages[", s, "]: channels ", st.channels,
               ", blocks ", st.blocks, ", stride ", st.stride, " must be positive");
    for (int b = 0; b < st.blocks; ++b) {
      LegoLayerSpec ls;
      ls.in_channels = in;
      ls.out_channels = st.channels;
      ls.stride = b == 0 ? st.stride : 1;
      ls.num_legos = spec.num_legos;
      ls.top_k = spec.top_k;
      ls.num_shared = spec.num_shared;
      ls.lego_width = spec.lego_width(st.channels);
      m_layers.push_back(
          std::make_unique<LegoLayer>(str("stage", s + 1, ".block", b), ls, num_tasks, spec.routing, rng));
      m_layers.back()->set_index(static_cast<int>(m_layers.size()) - 1);
      in = st.channels;
    }
    m_stage_ends.push_back(static_cast<int>(m_layers.size()) - 1);
  }
}

std::vector<Tensor> Backbone::forward(const RunState& rs, const Tensor& x, std::int64_t step, BackboneSaved* saved) {
  if (saved) {
    saved->layers.clear();
    saved->layers.resize(m_layers.size());
  }
  auto run = [&](std::size_t i, const Tensor& h) {
    LegoLayer::Output out = m_layers[i]->forward(rs, h, step);
    if (saved) saved->layers[i] = std::move(out.saved);
    return out.y;
  };
  if (m_vit) return m_vit->forward(rs, x, step);
  if (!x.defined()) {
    // Expert parallelism, a round in which this rank runs no task: it still serves its legos to the
    // other members of its block, layer by layer.
    for (std::size_t i = 0; i < m_layers.size(); ++i) run(i, Tensor());
    return {};
  }
  Tensor h = m_stem.forward(rs, x);
  std::vector<Tensor> features;
  std::size_t stage = 0;
  for (std::size_t i = 0; i < m_layers.size(); ++i) {
    h = run(i, h);
    if (static_cast<int>(i) == m_stage_ends[stage]) {
      features.push_back(h);
      ++stage;
    }
  }
  return features;
}

void Backbone::backward(const RunState& rs, const std::vector<Tensor>& d_features, BackboneSaved& saved) {
  if (m_vit) {
    if (d_features.empty()) {
      m_vit->serve_backward(rs);
      if (rs.grads_final) (*rs.grads_final)(-1);
      return;
    }
    // {the token map's gradient, the class token's}: a head that read neither leaves it out or undefined.
    GPPF_CHECK(d_features.size() <= 2, "gppf-vit: backward expects 1 or 2 gradients, got ", d_features.size());
    m_vit->backward(rs, d_features[0], d_features.size() > 1 ? d_features[1] : Tensor());
    if (rs.grads_final) (*rs.grads_final)(-1);
    return;
  }
  GPPF_CHECK(saved.layers.size() == m_layers.size(), "backbone: backward without a training forward");
  auto layer_backward = [&](int i, const Tensor& d) {
    const auto li = static_cast<std::size_t>(i);
    Tensor dx = m_layers[li]->backward(rs, d, std::move(saved.layers[li]));
    if (rs.grads_final) (*rs.grads_final)(i);
    return dx;
  };
  if (d_features.empty()) {
    for (int i = static_cast<int>(m_layers.size()) - 1; i >= 0; --i) layer_backward(i, Tensor());
    if (rs.grads_final) (*rs.grads_final)(-1);
    return;
  }
  GPPF_CHECK(d_features.size() == m_stage_ends.size(), "backbone: ", d_features.size(), " feature gradients for ",
             m_stage_ends.size(), " stages");
  Tensor d;
  int stage = static_cast<int>(m_stage_ends.size()) - 1;
  for (int i = static_cast<int>(m_layers.size()) - 1; i >= 0; --i) {
    if (stage >= 0 && i == m_stage_ends[static_cast<std::size_t>(stage)]) {
      const Tensor& df = d_features[static_cast<std::size_t>(stage)];
      if (df.defined()) {
        if (d.defined())
          kernels::axpby(1.0f, df, 1.0f, d, rs.stream);
        else
          d = df.clone(rs.stream);
      }
      --stage;
    }
    GPPF_CHECK(d.defined(), "backbone: no gradient reaches layer ", m_layers[static_cast<std::size_t>(i)]->name());
    d = layer_backward(i, d);
  }
  m_stem.backward(rs, d);
  if (rs.grads_final) (*rs.grads_final)(-1);
}

void Backbone::set_strategy(const std::shared_ptr<LegoStrategy>& strategy) {
  for (auto& l : m_layers) l->set_strategy(strategy);
}

void Backbone::set_mlp_runner(const std::shared_ptr<MlpLegoRunner>& runner) {
  if (m_vit)
    for (MlpLegoLayer* l : m_vit->lego_layers()) l->set_runner(runner);
}

std::vector<const Tensor*> Backbone::router_values() {
  std::vector<const Tensor*> out;
  for (RoutedLayer* l : routed_layers())
    for (int t = 0; t < l->num_tasks(); ++t) out.push_back(&l->router(t).value);
  return out;
}

std::size_t Backbone::set_router_copies(const std::vector<float>& values, std::size_t at) {
  for (RoutedLayer* l : routed_layers())
    for (int t = 0; t < l->num_tasks(); ++t) {
      const auto n = static_cast<std::size_t>(l->router(t).value.numel());
      GPPF_CHECK(at + n <= values.size(), "set_router_copies: ", values.size(), " values, more routers");
      l->set_router_copy(t, std::vector<float>(values.begin() + static_cast<std::ptrdiff_t>(at),
                                               values.begin() + static_cast<std::ptrdiff_t>(at + n)));
      at += n;
    }
  return at;
}

std::vector<int> Backbone::prepare_routes(const std::vector<int>& tasks, std::int64_t step, bool training,
                                          const Stream& s) {
  return m_route_table.prepare(routed_layers(), tasks, step, training, s);
}

void Backbone::refresh_routing(const Stream& s) { set_router_copies(read_back_all(router_values(), s), 0); }

float Backbone::apply_balance(const std::vector<int>& tasks) {
  float total = 0;
  for (RoutedLayer* l : routed_layers()) total += l->apply_balance(tasks);
  return total;
}

void Backbone::collect_parameters(std::vector<Parameter*>& out) {
  if (m_vit) return m_vit->collect_parameters(out);
  m_stem.collect_parameters(out);
  for (auto& l : m_layers) l->collect_parameters(out);
}

void Backbone::collect_buffers(std::vector<Buffer>& out) {
  if (m_vit) return;  // layer norm keeps no running statistics
  m_stem.collect_buffers(out);
  for (auto& l : m_layers) l->collect_buffers(out);
}

std::vector<LegoLayer*> Backbone::lego_layers() {
  std::vector<LegoLayer*> out;
  for (auto& l : m_layers) out.push_back(l.get());
  return out;
}

std::vector<RoutedLayer*> Backbone::routed_layers() {
  std::vector<RoutedLayer*> out;
  if (m_vit)
    for (MlpLegoLayer* l : m_vit->lego_layers()) out.push_back(l);
  for (auto& l : m_layers) out.push_back(l.get());
  return out;
}

std::int64_t Backbone::macs(const Shape& x, int active) const {
  if (m_vit) return m_vit->macs(x, active);
  std::int64_t total = m_stem.macs(x);
  Shape h = m_stem.output_shape(x);
  for (const auto& l : m_layers) {
    total += l->macs(h, active);
    h = l->output_shape(h);
  }
  return total;
}

std::vector<Shape> Backbone::stage_shapes(const Shape& x) const {
  if (m_vit) return {m_vit->output_shape(x)};
  std::vector<Shape> out;
  Shape h = m_stem.output_shape(x);
  std::size_t stage = 0;
  for (std::size_t i = 0; i < m_layers.size(); ++i) {
    h = m_layers[i]->output_shape(h);
    if (static_cast<int>(i) == m_stage_ends[stage]) {
      out.push_back(h);
      ++stage;
    }
  }
  return out;
}

std::vector<Shape> Backbone::layer_input_shapes(const Shape& x) const {
  if (m_vit) return m_vit->layer_input_shapes(x);
  std::vector<Shape> out;
  Shape h = m_stem.output_shape(x);
  for (const auto& layer : m_layers) {
    out.push_back(h);
    h = layer->output_shape(h);
  }
  return out;
}

std::vector<int> Backbone::stage_channels() const {
  if (m_vit) return {m_vit->spec().dim};
  std::vector<int> c;
  for (const auto& s : m_spec.stages) c.push_back(s.channels);
  return c;
}

std::vector<int> Backbone::stage_strides() const {
  if (m_vit) return {m_vit->spec().patch};
  std::vector<int> out;
  int stride = m_spec.stem_stride * (m_spec.stem_pool ? 2 : 1);
  for (const auto& s : m_spec.stages) {
    stride *= s.stride;
    out.push_back(stride);
  }
  return out;
}

}  // namespace gppf::nn
