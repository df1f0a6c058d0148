#include "src/nn/heads.hpp"

#include "kernels/elementwise.hpp"
#include "kernels/resample.hpp"

namespace gppf::nn {
namespace {

std::vector<Shape> shapes_of(const std::vector<Tensor>& ts) {
  std::vector<Shape> s;
  for (const auto& t : ts) s.push_back(t.shape());
  return s;
}

}  // namespace

// ---- classification ------------------------------------------------------------------

ClassificationHead::ClassificationHead(const std::string& name, int in_channels, int num_classes, std::mt19937_64& rng)
    : m_fc(name + ".fc", in_channels, num_classes, rng) {}

Tensor ClassificationHead::forward(const RunState& rs, const std::vector<Tensor>& features) {
  const Tensor& f = features.back();
  Tensor pooled = Tensor::empty({f.dim(0), f.dim(3)}, f.dtype(), f.device());
  kernels::global_avgpool_fwd(f, pooled, rs.stream);
  if (rs.training) m_shapes = shapes_of(features);
  return m_fc.forward(rs, pooled);
}

std::vector<Tensor> ClassificationHead::backward(const RunState& rs, const Tensor& dlogits) {
  const Shape& last = m_shapes.back();
  Tensor dpooled = Tensor::empty({last[0], last[3]}, dlogits.dtype(), dlogits.device());
  m_fc.backward(rs, dlogits, &dpooled, kernels::GradMode::Overwrite);
  std::vector<Tensor> grads(m_shapes.size());
  grads.back() = Tensor::empty(last, dlogits.dtype(), dlogits.device());
  kernels::global_avgpool_bwd(dpooled, grads.back(), kernels::GradMode::Overwrite, rs.stream);
  return grads;
}

void ClassificationHead::collect_parameters(std::vector<Parameter*>& out) { m_fc.collect_parameters(out); }

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
}

Tensor FpnNeck::forward(const RunState& rs, const std::vector<Tensor>& features) {
  GPPF_CHECK(features.size() == m_num_stages, "neck: ", features.size(), " features for ", m_num_stages, " stages");
  const std::size_t first = static_cast<std::size_t>(m_spec.first_stage);
  std::vector<Tensor> lat(m_lateral.size());
  for (std::size_t i = 0; i < m_lateral.size(); ++i)
    lat[i] = m_lateral_bn[i]->forward(rs, m_lateral[i]->forward(rs, features[first + i]));
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
  std::vector<Tensor> dlat(m_lateral.size());
  for (std::size_t i = 0; i + 1 < m_lateral.size(); ++i) {
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
  return grads;
}

void FpnNeck::collect_parameters(std::vector<Parameter*>& out) {
  for (std::size_t i = 0; i < m_lateral.size(); ++i) {
    m_lateral[i]->collect_parameters(out);
    m_lateral_bn[i]->collect_parameters(out);
  }
  m_smooth.collect_parameters(out);
  m_smooth_bn.collect_parameters(out);
}

void FpnNeck::collect_buffers(std::vector<NamedTensor>& out) {
  for (auto& bn : m_lateral_bn) bn->collect_buffers(out);
  m_smooth_bn.collect_buffers(out);
}

Shape FpnNeck::output_shape(const std::vector<Shape>& features) const {
  const Shape& f = features[static_cast<std::size_t>(m_spec.first_stage)];
  return {f[0], f[1], f[2], m_spec.channels};
}

std::int64_t FpnNeck::macs(const std::vector<Shape>& features) const {
  std::int64_t total = 0;
  const std::size_t first = static_cast<std::size_t>(m_spec.first_stage);
  for (std::size_t i = 0; i < m_lateral.size(); ++i) total += m_lateral[i]->macs(features[first + i]);
  const Shape& f = features[first];
  return total + m_smooth.macs({f[0], f[1], f[2], m_spec.channels});
}

// ---- detection --------------------------------------------------------------------------

DetectionHead::DetectionHead(const std::string& name, const std::vector<int>& stage_channels, const NeckSpec& neck,
                             int num_classes, int num_tasks, std::mt19937_64& rng)
    : m_num_classes(num_classes), m_neck(name + ".neck", stage_channels, neck, num_tasks, rng) {
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
  Tensor x = m_neck.forward(rs, features);
  return {run_branch(rs, m_heat, x), run_branch(rs, m_size, x), run_branch(rs, m_offset, x)};
}

std::vector<Tensor> DetectionHead::backward(const RunState& rs, const DetectionOutputs& grads) {
  const Shape x_shape = m_heat.conv->input_shape();
  Tensor dx = Tensor::empty(x_shape, grads.heatmap.dtype(), grads.heatmap.device());
  backward_branch(rs, m_heat, grads.heatmap, dx, kernels::GradMode::Overwrite);
  backward_branch(rs, m_size, grads.size, dx, kernels::GradMode::Accumulate);
  backward_branch(rs, m_offset, grads.offset, dx, kernels::GradMode::Accumulate);
  return m_neck.backward(rs, dx);
}

void DetectionHead::collect_parameters(std::vector<Parameter*>& out) {
  m_neck.collect_parameters(out);
  for (Branch* b : {&m_heat, &m_size, &m_offset}) {
    b->conv->collect_parameters(out);
    b->out->collect_parameters(out);
  }
}

void DetectionHead::collect_buffers(std::vector<NamedTensor>& out) { m_neck.collect_buffers(out); }

std::int64_t DetectionHead::macs(const std::vector<Shape>& features) const {
  const Shape x = m_neck.output_shape(features);
  std::int64_t total = m_neck.macs(features);
  for (const Branch* b : {&m_heat, &m_size, &m_offset}) total += b->conv->macs(x) + b->out->macs(x);
  return total;
}

// ---- segmentation -------------------------------------------------------------------

SegmentationHead::SegmentationHead(const std::string& name, const std::vector<int>& stage_channels,
                                   const NeckSpec& neck, int num_classes, int num_tasks, std::mt19937_64& rng)
    : m_neck(name + ".neck", stage_channels, neck, num_tasks, rng),
      m_classifier(name + ".classifier", {neck.channels, num_classes, 1, 1, 0, 1, true}, rng) {}

Tensor SegmentationHead::forward(const RunState& rs, const std::vector<Tensor>& features, int out_h, int out_w) {
  Tensor low = m_classifier.forward(rs, m_neck.forward(rs, features));
  Tensor logits = Tensor::empty({low.dim(0), out_h, out_w, low.dim(3)}, low.dtype(), low.device());
  kernels::upsample_fwd({kernels::UpsampleMode::Bilinear}, low, logits, rs.stream);
  if (rs.training) m_low_shape = low.shape();
  return logits;
}

std::vector<Tensor> SegmentationHead::backward(const RunState& rs, const Tensor& dlogits) {
  Tensor dlow = Tensor::empty(m_low_shape, dlogits.dtype(), dlogits.device());
  kernels::upsample_bwd({kernels::UpsampleMode::Bilinear}, dlogits, dlow, kernels::GradMode::Overwrite, rs.stream);
  Tensor dx = Tensor::empty(m_classifier.input_shape(), dlogits.dtype(), dlogits.device());
  m_classifier.backward(rs, dlow, &dx, kernels::GradMode::Overwrite);
  return m_neck.backward(rs, dx);
}

void SegmentationHead::collect_parameters(std::vector<Parameter*>& out) {
  m_neck.collect_parameters(out);
  m_classifier.collect_parameters(out);
}

void SegmentationHead::collect_buffers(std::vector<NamedTensor>& out) { m_neck.collect_buffers(out); }

std::int64_t SegmentationHead::macs(const std::vector<Shape>& features) const {
  return m_neck.macs(features) + m_classifier.macs(m_neck.output_shape(features));
}

}  // namespace gppf::nn
