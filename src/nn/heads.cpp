#include "src/nn/heads.hpp"

#include "kernels/concat.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/resample.hpp"

namespace gppf::nn {
namespace {

std::vector<Shape> shapes_of(const std::vector<Tensor>& ts) {
  std::vector<Shape> s;
  for (const auto& t : ts) s.push_back(t.shape());
  return s;
}

// The 2x2 grid as one average pool: windows [0, ceil(H/2)) and [floor(H/2), H) (PyTorch's adaptive
// average pooling to 2 for every H >= 2).
kernels::Pool2dParams grid_pool(const Shape& f) {
  GPPF_CHECK(f[1] >= 2 && f[2] >= 2, "classification head: last stage ", f[1], "x", f[2],
             " is smaller than its 2x2 pooling grid; use a larger input or fewer strides");
  kernels::Pool2dParams p;
  p.kernel_h = static_cast<int>((f[1] + 1) / 2);
  p.kernel_w = static_cast<int>((f[2] + 1) / 2);
  p.stride_h = static_cast<int>(f[1] / 2);
  p.stride_w = static_cast<int>(f[2] / 2);
  return p;
}

}  // namespace

// ---- classification ------------------------------------------------------------------

ClassificationHead::ClassificationHead(const std::string& name, int in_channels, int num_classes, std::mt19937_64& rng,
                                       bool grid)
    : m_grid(grid), m_fc(name + ".fc", (grid ? 5 : 1) * in_channels, num_classes, rng) {}

Tensor ClassificationHead::forward(const RunState& rs, const std::vector<Tensor>& features) {
  const Tensor& f = features.back();
  Tensor pooled = Tensor::empty({f.dim(0), f.dim(3)}, f.dtype(), f.device());
  kernels::global_avgpool_fwd(f, pooled, rs.stream);
  if (rs.training) m_shapes = shapes_of(features);
  if (!m_grid) return m_fc.forward(rs, pooled);
  const kernels::Pool2dParams gp = grid_pool(f.shape());
  Tensor grid = Tensor::empty({f.dim(0), 2, 2, f.dim(3)}, f.dtype(), f.device());
  kernels::avgpool2d_fwd(gp, f, grid, rs.stream);
  Tensor both = Tensor::empty({f.dim(0), 5 * f.dim(3)}, f.dtype(), f.device());
  kernels::concat_channels({pooled, grid.reshape({f.dim(0), 4 * f.dim(3)})}, both, rs.stream);
  return m_fc.forward(rs, both);
}

std::vector<Tensor> ClassificationHead::backward(const RunState& rs, const Tensor& dlogits) {
  const Shape& last = m_shapes.back();
  const std::int64_t n = last[0], c = last[3];
  std::vector<Tensor> grads(m_shapes.size());
  grads.back() = Tensor::empty(last, dlogits.dtype(), dlogits.device());
  if (!m_grid) {
    Tensor dpooled = Tensor::empty({n, c}, dlogits.dtype(), dlogits.device());
    m_fc.backward(rs, dlogits, &dpooled, kernels::GradMode::Overwrite);
    kernels::global_avgpool_bwd(dpooled, grads.back(), kernels::GradMode::Overwrite, rs.stream);
    return grads;
  }
  Tensor dboth = Tensor::empty({n, 5 * c}, dlogits.dtype(), dlogits.device());
  m_fc.backward(rs, dlogits, &dboth, kernels::GradMode::Overwrite);
  std::vector<Tensor> parts = {Tensor::empty({n, c}, dlogits.dtype(), dlogits.device()),
                               Tensor::empty({n, 4 * c}, dlogits.dtype(), dlogits.device())};
  kernels::split_channels(dboth, parts, kernels::GradMode::Overwrite, rs.stream);
  kernels::avgpool2d_bwd(grid_pool(last), parts[1].reshape({n, 2, 2, c}), grads.back(), rs.stream);
  kernels::global_avgpool_bwd(parts[0], grads.back(), kernels::GradMode::Accumulate, rs.stream);
  return grads;
}

void ClassificationHead::collect_parameters(std::vector<Parameter*>& out) { m_fc.collect_parameters(out); }

// ---- the neck's input ------------------------------------------------------------------

NeckInput::NeckInput(const std::string& name, const std::vector<int>& stage_channels, const NeckSpec& spec,
                     bool also_first, std::mt19937_64& rng)
    : m_channels(stage_channels), m_num_features(stage_channels.size()) {
  if (spec.pyramid.empty()) return;
  std::vector<bool> used(spec.pyramid.size());
  for (std::size_t i = 0; i < used.size(); ++i)
    used[i] = static_cast<int>(i) >= spec.first_stage || (i == 0 && also_first);
  m_pyramid = std::make_unique<SimplePyramid>(name + ".pyramid", stage_channels.back(), spec.pyramid, used, rng);
  m_channels = m_pyramid->channels();
}

std::vector<Tensor> NeckInput::forward(const RunState& rs, const std::vector<Tensor>& features) {
  // The backbone's stages only: gppf-vit's class token, when it has one, follows them.
  GPPF_CHECK(features.size() >= m_num_features, "neck: ", m_num_features, " feature maps expected, got ",
             features.size());
  if (m_pyramid) return m_pyramid->forward(rs, features[m_num_features - 1]);
  return {features.begin(), features.begin() + static_cast<std::ptrdiff_t>(m_num_features)};
}

std::vector<Tensor> NeckInput::backward(const RunState& rs, std::vector<Tensor> d_levels) {
  if (!m_pyramid) return d_levels;
  std::vector<Tensor> grads(m_num_features);
  grads.back() = m_pyramid->backward(rs, d_levels);
  return grads;
}

void NeckInput::collect_parameters(std::vector<Parameter*>& out) {
  if (m_pyramid) m_pyramid->collect_parameters(out);
}

std::vector<Shape> NeckInput::shapes(const std::vector<Shape>& features) const {
  return m_pyramid ? m_pyramid->output_shapes(features.back()) : features;
}

std::int64_t NeckInput::macs(const std::vector<Shape>& features) const {
  return m_pyramid ? m_pyramid->macs(features.back()) : 0;
}

// ---- FPN neck --------------------------------------------------------------------------

FpnNeck::FpnNeck(const std::string& name, const std::vector<int>& stage_channels, const NeckSpec& spec, int num_tasks,
                 std::mt19937_64& rng)
    : m_spec(spec),
      m_num_stages(stage_channels.size()),
      m_smooth(name + ".smooth", {spec.channels, spec.channels, 3, 1, 1, 1, false}, rng),
      m_smooth_bn(name + ".smooth_bn", spec.channels, num_tasks, true) {
  GPPF_CHECK(spec.first_stage >= 0 && spec.first_stage < static_cast<int>(stage_channels.size()), name,
             ": neck first_stage ", spec.first_stage, " out of range (", stage_channels.size(), " stages)");
  for (std::size_t s = static_cast<std::size_t>(spec.first_stage); s < stage_channels.size(); ++s) {
    m_lateral.push_back(std::make_unique<Conv2d>(str(name, ".lateral", s),
                                                 ConvSpec{stage_channels[s], spec.channels, 1, 1, 0, 1, false}, rng));
    m_lateral_bn.push_back(std::make_unique<BatchNorm>(str(name, ".lateral_bn", s), spec.channels, num_tasks, true));
  }
  GPPF_CHECK(spec.context_levels >= 0, name, ": neck context_levels ", spec.context_levels, " must be >= 0");
  for (int e = 0; e < spec.context_levels; ++e) {
    const int in = e == 0 ? stage_channels.back() : spec.channels;
    m_context.push_back(
        std::make_unique<Conv2d>(str(name, ".context", e), ConvSpec{in, spec.channels, 3, 2, 1, 1, false}, rng));
    m_context_bn.push_back(std::make_unique<BatchNorm>(str(name, ".context_bn", e), spec.channels, num_tasks, true));
  }
}

Tensor FpnNeck::forward(const RunState& rs, const std::vector<Tensor>& features) {
  GPPF_CHECK(features.size() == m_num_stages, "neck: ", features.size(), " features for ", m_num_stages, " stages");
  const std::size_t first = static_cast<std::size_t>(m_spec.first_stage);
  std::vector<Tensor> lat(m_lateral.size());
  for (std::size_t i = 0; i < m_lateral.size(); ++i)
    lat[i] = m_lateral_bn[i]->forward(rs, m_lateral[i]->forward(rs, features[first + i]));
  for (std::size_t e = 0; e < m_context.size(); ++e) {
    const Tensor& in = e == 0 ? features.back() : lat.back();
    lat.push_back(m_context_bn[e]->forward(rs, m_context[e]->forward(rs, in)));
  }
  Tensor p = lat.back();
  for (int i = static_cast<int>(lat.size()) - 2; i >= 0; --i) {
    Tensor& l = lat[static_cast<std::size_t>(i)];
    Tensor up = Tensor::empty(l.shape(), l.dtype(), l.device());
    kernels::upsample_fwd({kernels::UpsampleMode::Nearest}, p, up, rs.stream);
    kernels::axpby(1.0f, l, 1.0f, up, rs.stream);
    p = up;
  }
  if (rs.training) m_level_shapes = shapes_of(lat);
  return m_smooth_bn.forward(rs, m_smooth.forward(rs, p));
}

std::vector<Tensor> FpnNeck::backward(const RunState& rs, const Tensor& dy) {
  Tensor ds = m_smooth_bn.backward(rs, dy);
  Tensor dp = Tensor::empty(m_level_shapes.front(), dy.dtype(), dy.device());
  m_smooth.backward(rs, ds, &dp, kernels::GradMode::Overwrite);
  std::vector<Tensor> dlat(m_level_shapes.size());
  for (std::size_t i = 0; i + 1 < dlat.size(); ++i) {
    dlat[i] = dp;  // p_i = lat_i + up(p_{i+1})
    Tensor next = Tensor::empty(m_level_shapes[i + 1], dy.dtype(), dy.device());
    kernels::upsample_bwd({kernels::UpsampleMode::Nearest}, dp, next, kernels::GradMode::Overwrite, rs.stream);
    dp = next;
  }
  dlat.back() = dp;
  std::vector<Tensor> grads(m_num_stages);
  const std::size_t first = static_cast<std::size_t>(m_spec.first_stage);
  for (std::size_t i = 0; i < m_lateral.size(); ++i) {
    Tensor d = m_lateral_bn[i]->backward(rs, dlat[i]);
    Tensor df = Tensor::empty(m_lateral[i]->input_shape(), dy.dtype(), dy.device());
    m_lateral[i]->backward(rs, d, &df, kernels::GradMode::Overwrite);
    grads[first + i] = df;
  }
  // A context level feeds the top-down sum and the next context level: its gradient is both.
  for (std::size_t e = m_context.size(); e-- > 0;) {
    Tensor d = m_context_bn[e]->backward(rs, dlat[m_lateral.size() + e]);
    Tensor& dx = e == 0 ? grads.back() : dlat[m_lateral.size() + e - 1];
    m_context[e]->backward(rs, d, &dx, kernels::GradMode::Accumulate);
  }
  return grads;
}

void FpnNeck::collect_parameters(std::vector<Parameter*>& out) {
  for (std::size_t i = 0; i < m_lateral.size(); ++i) {
    m_lateral[i]->collect_parameters(out);
    m_lateral_bn[i]->collect_parameters(out);
  }
  m_smooth.collect_parameters(out);
  m_smooth_bn.collect_parameters(out);
  for (std::size_t e = 0; e < m_context.size(); ++e) {
    m_context[e]->collect_parameters(out);
    m_context_bn[e]->collect_parameters(out);
  }
}

void FpnNeck::collect_buffers(std::vector<Buffer>& out) {
  for (auto& bn : m_lateral_bn) bn->collect_buffers(out);
  m_smooth_bn.collect_buffers(out);
  for (auto& bn : m_context_bn) bn->collect_buffers(out);
}

Shape FpnNeck::output_shape(const std::vector<Shape>& features) const {
  const Shape& f = features[static_cast<std::size_t>(m_spec.first_stage)];
  return {f[0], f[1], f[2], m_spec.channels};
}

std::int64_t FpnNeck::macs(const std::vector<Shape>& features) const {
  std::int64_t total = 0;
  const std::size_t first = static_cast<std::size_t>(m_spec.first_stage);
  for (std::size_t i = 0; i < m_lateral.size(); ++i) total += m_lateral[i]->macs(features[first + i]);
  Shape in = features.back();
  for (const auto& c : m_context) {
    total += c->macs(in);
    in = c->output_shape(in);
  }
  const Shape& f = features[first];
  return total + m_smooth.macs({f[0], f[1], f[2], m_spec.channels});
}

// ---- detection --------------------------------------------------------------------------

DetectionHead::DetectionHead(const std::string& name, const std::vector<int>& stage_channels, const NeckSpec& neck,
                             int num_classes, int num_tasks, std::mt19937_64& rng)
    : m_num_classes(num_classes),
      m_input(name, stage_channels, neck, false, rng),
      m_neck(name + ".neck", m_input.channels(), neck, num_tasks, rng) {
  auto make = [&](Branch& b, const char* what, int outputs) {
    b.conv = std::make_unique<Conv2d>(str(name, ".", what, ".conv"),
                                      ConvSpec{neck.channels, neck.channels, 3, 1, 1, 1, true}, rng);
    b.out =
        std::make_unique<Conv2d>(str(name, ".", what, ".out"), ConvSpec{neck.channels, outputs, 1, 1, 0, 1, true}, rng);
  };
  make(m_heat, "heatmap", num_classes);
  make(m_size, "size", 2);
  make(m_offset, "offset", 2);
  // CenterNet starts the heat map at sigmoid(-2.19) = 0.1 so that the focal loss is not swamped by
  // easy negatives in the first steps.
  m_heat.out->fill_bias(-2.19f);
}

Tensor DetectionHead::run_branch(const RunState& rs, Branch& b, const Tensor& x) {
  Tensor h = b.conv->forward(rs, x);
  Tensor r = Tensor::empty(h.shape(), h.dtype(), h.device());
  kernels::relu_fwd(h, r, rs.stream);
  if (rs.training) b.hidden = r;
  return b.out->forward(rs, r);
}

void DetectionHead::backward_branch(const RunState& rs, Branch& b, const Tensor& dy, Tensor& dx,
                                    kernels::GradMode mode) {
  Tensor dh = Tensor::empty(b.hidden.shape(), dy.dtype(), dy.device());
  b.out->backward(rs, dy, &dh, kernels::GradMode::Overwrite);
  kernels::relu_bwd(b.hidden, dh, dh, kernels::GradMode::Overwrite, rs.stream);
  b.conv->backward(rs, dh, &dx, mode);
  b.hidden = Tensor();
}

DetectionOutputs DetectionHead::forward(const RunState& rs, const std::vector<Tensor>& features) {
  Tensor x = m_neck.forward(rs, m_input.forward(rs, features));
  return {run_branch(rs, m_heat, x), run_branch(rs, m_size, x), run_branch(rs, m_offset, x)};
}

std::vector<Tensor> DetectionHead::backward(const RunState& rs, const DetectionOutputs& grads) {
  const Shape x_shape = m_heat.conv->input_shape();
  Tensor dx = Tensor::empty(x_shape, grads.heatmap.dtype(), grads.heatmap.device());
  backward_branch(rs, m_heat, grads.heatmap, dx, kernels::GradMode::Overwrite);
  backward_branch(rs, m_size, grads.size, dx, kernels::GradMode::Accumulate);
  backward_branch(rs, m_offset, grads.offset, dx, kernels::GradMode::Accumulate);
  return m_input.backward(rs, m_neck.backward(rs, dx));
}

void DetectionHead::collect_parameters(std::vector<Parameter*>& out) {
  m_input.collect_parameters(out);
  m_neck.collect_parameters(out);
  for (Branch* b : {&m_heat, &m_size, &m_offset}) {
    b->conv->collect_parameters(out);
    b->out->collect_parameters(out);
  }
}

void DetectionHead::collect_buffers(std::vector<Buffer>& out) { m_neck.collect_buffers(out); }

std::int64_t DetectionHead::macs(const std::vector<Shape>& features) const {
  const std::vector<Shape> levels = m_input.shapes(features);
  const Shape x = m_neck.output_shape(levels);
  std::int64_t total = m_input.macs(features) + m_neck.macs(levels);
  for (const Branch* b : {&m_heat, &m_size, &m_offset}) total += b->conv->macs(x) + b->out->macs(x);
  return total;
}

// ---- segmentation -------------------------------------------------------------------

SegmentationHead::SegmentationHead(const std::string& name, const std::vector<int>& stage_channels,
                                   const NeckSpec& neck, int num_classes, int num_tasks, std::mt19937_64& rng)
    : m_input(name, stage_channels, neck, true, rng),  // the skip reads level 0
      m_neck(name + ".neck", m_input.channels(), neck, num_tasks, rng),
      m_classifier(name + ".classifier", {neck.channels, num_classes, 1, 1, 0, 1, true}, rng) {
  if (neck.first_stage > 0)
    m_skip =
        std::make_unique<Conv2d>(name + ".skip", ConvSpec{m_input.channels()[0], num_classes, 1, 1, 0, 1, true}, rng);
}

Tensor SegmentationHead::forward(const RunState& rs, const std::vector<Tensor>& stages, int out_h, int out_w) {
  const std::vector<Tensor> features = m_input.forward(rs, stages);
  Tensor low = m_classifier.forward(rs, m_neck.forward(rs, features));
  if (rs.training) m_low_shape = low.shape();
  if (m_skip) {
    // Logits at stage 0's resolution: the neck's, upsampled, plus a linear read-out of stage 0.
    Tensor fine = m_skip->forward(rs, features[0]);
    Tensor up = Tensor::empty(fine.shape(), low.dtype(), low.device());
    kernels::upsample_fwd({kernels::UpsampleMode::Bilinear}, low, up, rs.stream);
    kernels::axpby(1.0f, fine, 1.0f, up, rs.stream);
    low = up;
    if (rs.training) m_skip_shape = low.shape();
  }
  if (low.dim(1) == out_h && low.dim(2) == out_w) return low;
  Tensor logits = Tensor::empty({low.dim(0), out_h, out_w, low.dim(3)}, low.dtype(), low.device());
  kernels::upsample_fwd({kernels::UpsampleMode::Bilinear}, low, logits, rs.stream);
  return logits;
}

std::vector<Tensor> SegmentationHead::backward(const RunState& rs, const Tensor& dlogits) {
  Tensor d = dlogits;
  const Shape& mid = m_skip ? m_skip_shape : m_low_shape;
  if (d.shape() != mid) {
    Tensor dm = Tensor::empty(mid, dlogits.dtype(), dlogits.device());
    kernels::upsample_bwd({kernels::UpsampleMode::Bilinear}, d, dm, kernels::GradMode::Overwrite, rs.stream);
    d = dm;
  }
  Tensor dskip;
  if (m_skip) {
    dskip = Tensor::empty(m_skip->input_shape(), dlogits.dtype(), dlogits.device());
    m_skip->backward(rs, d, &dskip, kernels::GradMode::Overwrite);
    Tensor dlow = Tensor::empty(m_low_shape, dlogits.dtype(), dlogits.device());
    kernels::upsample_bwd({kernels::UpsampleMode::Bilinear}, d, dlow, kernels::GradMode::Overwrite, rs.stream);
    d = dlow;
  }
  Tensor dx = Tensor::empty(m_classifier.input_shape(), dlogits.dtype(), dlogits.device());
  m_classifier.backward(rs, d, &dx, kernels::GradMode::Overwrite);
  std::vector<Tensor> grads = m_neck.backward(rs, dx);
  if (m_skip) grads[0] = dskip;
  return m_input.backward(rs, std::move(grads));
}

void SegmentationHead::collect_parameters(std::vector<Parameter*>& out) {
  m_input.collect_parameters(out);
  m_neck.collect_parameters(out);
  m_classifier.collect_parameters(out);
  if (m_skip) m_skip->collect_parameters(out);
}

void SegmentationHead::collect_buffers(std::vector<Buffer>& out) { m_neck.collect_buffers(out); }

std::int64_t SegmentationHead::macs(const std::vector<Shape>& stages) const {
  const std::vector<Shape> features = m_input.shapes(stages);
  std::int64_t total = m_input.macs(stages) + m_neck.macs(features) + m_classifier.macs(m_neck.output_shape(features));
  if (m_skip) total += m_skip->macs(features[0]);
  return total;
}

}  // namespace gppf::nn
