#include "src/nn/layers.hpp"

#include <algorithm>
#include <cmath>

#include "kernels/batchnorm.hpp"
#include "kernels/cast.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/linear.hpp"

namespace gppf::nn {

void conv2d_filter_grad(const kernels::Conv2dParams& p, const Tensor& x, const Tensor& dy, Parameter& weight,
                        Parameter* bias, kernels::GradMode mode, const Stream& stream) {
  if (x.dtype() == DType::F32) {
    kernels::conv2d_bwd_filter(p, x, dy, weight.grad, bias ? &bias->grad : nullptr, mode, stream);
    return;
  }
  Tensor dw = Tensor::empty(weight.value.shape(), x.dtype(), x.device());
  kernels::conv2d_bwd_filter(p, x, dy, dw, nullptr, kernels::GradMode::Overwrite, stream);
  if (mode == kernels::GradMode::Overwrite) {
    kernels::cast(dw, weight.grad, stream);
  } else {
    kernels::axpby(1.0f, kernels::cast(dw, DType::F32, stream), 1.0f, weight.grad, stream);
  }
  if (bias) kernels::reduce_rows(dy, bias->grad, mode, stream);
}

Conv2d::Conv2d(std::string name, const ConvSpec& spec, std::mt19937_64& rng) : m_spec(spec) {
  GPPF_CHECK(spec.in_channels > 0 && spec.out_channels > 0 && spec.groups > 0 && spec.in_channels % spec.groups == 0 &&
                 spec.out_channels % spec.groups == 0,
             name, ": channels ", spec.in_channels, "->", spec.out_channels, " do not divide into ", spec.groups,
             " groups");
  m_params.stride_h = m_params.stride_w = spec.stride;
  m_params.pad_h = m_params.pad_w = spec.padding;
  m_params.groups = spec.groups;
  const int cin_g = spec.in_channels / spec.groups;
  m_weight = make_parameter(name + ".weight",
                            he_normal({spec.out_channels, spec.kernel, spec.kernel, cin_g},
                                      static_cast<std::int64_t>(spec.kernel) * spec.kernel * cin_g, rng),
                            true);
  if (spec.bias) m_bias = make_parameter(name + ".bias", constant({spec.out_channels}, 0.0f), false);
}

Shape Conv2d::output_shape(const Shape& x) const {
  return kernels::conv2d_output_shape(m_params, x, m_weight.value.shape());
}

std::int64_t Conv2d::macs(const Shape& x) const {
  const Shape y = output_shape(x);
  return shape_numel(y) * m_spec.kernel * m_spec.kernel * (m_spec.in_channels / m_spec.groups);
}

Tensor Conv2d::forward(const RunState& rs, const Tensor& x) {
  Tensor y = Tensor::empty(output_shape(x.shape()), x.dtype(), x.device());
  kernels::conv2d_fwd(m_params, x, m_weight.operand(x.dtype()), m_bias.value, y, rs.stream);
  if (rs.training) m_x = x;
  return y;
}

void Conv2d::backward(const RunState& rs, const Tensor& dy, Tensor* dx, kernels::GradMode dx_mode) {
  GPPF_CHECK(m_x.defined(), m_weight.name, ": backward without a training forward");
  if (dx) kernels::conv2d_bwd_data(m_params, dy, m_weight.operand(dy.dtype()), *dx, dx_mode, rs.stream);
  // A frozen convolution (gppf finetune's probe, freeze_backbone) gets no gradient: the filter
  // gradient would cost as much as the input gradient and nothing would read it.
  if (m_weight.trainable || (m_bias.value.defined() && m_bias.trainable)) {
    const auto mode = m_weight.take_grad_mode();
    if (m_bias.value.defined()) m_bias.take_grad_mode();
    conv2d_filter_grad(m_params, m_x, dy, m_weight, m_bias.value.defined() ? &m_bias : nullptr, mode, rs.stream);
  }
  m_x = Tensor();
}

void Conv2d::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&m_weight);
  if (m_bias.value.defined()) out.push_back(&m_bias);
}

BatchNorm::BatchNorm(std::string name, int channels, int num_tasks, bool relu, float momentum, float eps)
    : m_name(std::move(name)) {
  m_params.eps = eps;
  m_params.momentum = momentum;
  m_params.relu = relu;
  m_gamma = make_parameter(m_name + ".gamma", constant({channels}, 1.0f), false);
  m_beta = make_parameter(m_name + ".beta", constant({channels}, 0.0f), false);
  for (int t = 0; t < num_tasks; ++t) {
    m_running_mean.push_back(constant({channels}, 0.0f));
    m_running_var.push_back(constant({channels}, 1.0f));
  }
}

Tensor BatchNorm::forward(const RunState& rs, const Tensor& x) {
  if (!rs.segments.empty()) return forward_segments(rs, x);
  GPPF_CHECK(rs.task >= 0 && rs.task < static_cast<int>(m_running_mean.size()), m_name, ": task ", rs.task,
             " out of range (", m_running_mean.size(), " tasks)");
  const auto t = static_cast<std::size_t>(rs.task);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (!rs.training) {
    kernels::batchnorm_fwd_infer(m_params, x, m_gamma.value, m_beta.value, m_running_mean[t], m_running_var[t], y,
                                 rs.stream);
    return y;
  }
  if (rs.bn_sync) return forward_synced(rs, x, t);
  m_count = 0;
  m_segments.clear();
  const Shape c{x.dim(-1)};
  m_save_mean = Tensor::empty(c, DType::F32, x.device());
  m_save_invstd = Tensor::empty(c, DType::F32, x.device());
  kernels::BatchNormParams p = m_params;
  if (rs.bn_momentum >= 0) p.momentum = rs.bn_momentum;
  kernels::batchnorm_fwd_train(p, x, m_gamma.value, m_beta.value, m_running_mean[t], m_running_var[t], y, m_save_mean,
                               m_save_invstd, rs.stream);
  m_x = x;
  m_y = y;
  return y;
}

Tensor BatchNorm::backward(const RunState& rs, const Tensor& dy) {
  GPPF_CHECK(m_x.defined(), m_name, ": backward without a training forward");
  if (m_count > 0) return backward_synced(rs, dy);
  Tensor dx = Tensor::empty(m_x.shape(), m_x.dtype(), m_x.device());
  const auto mode = m_gamma.take_grad_mode();
  m_beta.take_grad_mode();
  if (m_segments.empty())
    kernels::batchnorm_bwd(m_params, m_x, m_y, dy, m_gamma.value, m_save_mean, m_save_invstd, dx, m_gamma.grad,
                           m_beta.grad, mode, rs.stream);
  else
    kernels::batchnorm_bwd_segments(m_params, m_x, m_y, dy, m_gamma.value, m_segments, m_save_mean, m_save_invstd, dx,
                                    m_gamma.grad, m_beta.grad, mode, rs.stream);
  m_x = m_y = Tensor();
  m_segments.clear();
  return dx;
}

Tensor BatchNorm::forward_segments(const RunState& rs, const Tensor& x) {
  GPPF_CHECK(rs.training && !rs.bn_sync, m_name,
             ": several tasks' samples in one batch are for single-process training only");
  m_segments.clear();
  std::int64_t rows = 0;
  for (const TaskSegment& seg : rs.segments) {
    GPPF_CHECK(seg.task >= 0 && seg.task < num_tasks(), m_name, ": task ", seg.task, " out of range (", num_tasks(),
               " tasks)");
    const auto t = static_cast<std::size_t>(seg.task);
    m_segments.push_back({seg.count, &m_running_mean[t], &m_running_var[t]});
    rows += seg.count;
  }
  GPPF_CHECK(x.ndim() >= 1 && x.dim(0) == rows, m_name, ": input ", x.desc(), " does not hold the ", rows,
             " samples of its task segments");
  m_count = 0;
  const Shape sc{static_cast<std::int64_t>(m_segments.size()), x.dim(-1)};
  m_save_mean = Tensor::empty(sc, DType::F32, x.device());
  m_save_invstd = Tensor::empty(sc, DType::F32, x.device());
  kernels::BatchNormParams p = m_params;
  if (rs.bn_momentum >= 0) p.momentum = rs.bn_momentum;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::batchnorm_fwd_train_segments(p, x, m_gamma.value, m_beta.value, m_segments, y, m_save_mean, m_save_invstd,
                                        rs.stream);
  m_x = x;
  m_y = y;
  return y;
}

// Synchronised BN: the sums of every replica's rows (a few per-channel values through the host, on any
// device), then the element-wise passes of the plain kernels with those statistics.
namespace {
Tensor channel_values(const std::vector<float>& v, Device device) {
  const Tensor h = Tensor::from_vector({static_cast<std::int64_t>(v.size())}, v);
  return device.is_host() ? h : h.to(device);
}
}  // namespace

Tensor BatchNorm::forward_synced(const RunState& rs, const Tensor& x, std::size_t t) {
  const std::int64_t C = x.dim(-1), rows = x.numel() / C;
  const auto nc = static_cast<std::size_t>(C);
  // [sum x (C), sum x^2 (C), rows] in double, summed over the replicas.
  std::vector<double> s = kernels::batchnorm_channel_sums(false, x, Tensor(), Tensor(), Tensor(), Tensor(), rs.stream);
  s.push_back(static_cast<double>(rows));
  rs.bn_sync->allreduce_sum(s.data(), static_cast<std::int64_t>(s.size()), m_name + " synchronised statistics");
  const double n = s.back();
  const double momentum = rs.bn_momentum >= 0 ? rs.bn_momentum : m_params.momentum;
  std::vector<float> mean(nc), var(nc), invstd(nc), unbiased(nc);
  for (std::size_t c = 0; c < nc; ++c) {
    const double mu = s[c] / n;
    const double v = std::max(0.0, s[nc + c] / n - mu * mu);
    mean[c] = static_cast<float>(mu);
    var[c] = static_cast<float>(v);
    invstd[c] = static_cast<float>(1.0 / std::sqrt(v + m_params.eps));
    unbiased[c] = static_cast<float>(v * n / std::max(1.0, n - 1.0));
  }
  m_save_mean = channel_values(mean, x.device());
  m_save_invstd = channel_values(invstd, x.device());
  const auto m = static_cast<float>(momentum);
  kernels::axpby(m, m_save_mean, 1.0f - m, m_running_mean[t], rs.stream);
  kernels::axpby(m, channel_values(unbiased, x.device()), 1.0f - m, m_running_var[t], rs.stream);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::batchnorm_fwd_infer(m_params, x, m_gamma.value, m_beta.value, m_save_mean, channel_values(var, x.device()),
                               y, rs.stream);
  m_x = x;
  m_y = y;
  m_count = n;
  return y;
}

Tensor BatchNorm::backward_synced(const RunState& rs, const Tensor& dy) {
  GPPF_CHECK(rs.bn_sync, m_name, ": synchronised forward but backward without a communicator");
  const std::int64_t C = m_x.dim(-1);
  const auto nc = static_cast<std::size_t>(C);
  // Local [sum g (C), sum g xhat (C)], g = dy masked by the ReLU.
  std::vector<double> s =
      kernels::batchnorm_channel_sums(m_params.relu, m_x, m_y, dy, m_save_mean, m_save_invstd, rs.stream);
  // The affine gradients are this replica's share; the gradient all-reduce sums them.
  std::vector<float> vg(nc), vb(nc);
  for (std::size_t c = 0; c < nc; ++c) {
    vg[c] = static_cast<float>(s[nc + c]);
    vb[c] = static_cast<float>(s[c]);
  }
  const Device dev = m_x.device();
  for (auto [param, v] : {std::pair<Parameter*, const std::vector<float>*>{&m_gamma, &vg}, {&m_beta, &vb}}) {
    const Tensor t = channel_values(*v, dev);
    if (param->take_grad_mode() == kernels::GradMode::Overwrite)
      param->grad.copy_from(t, rs.stream);
    else
      kernels::axpby(1.0f, t, 1.0f, param->grad, rs.stream);
  }
  rs.bn_sync->allreduce_sum(s.data(), static_cast<std::int64_t>(s.size()), m_name + " synchronised gradient sums");
  const double n = m_count;
  const Tensor gamma_h = read_back(m_gamma.value, rs.stream), invstd_h = read_back(m_save_invstd, rs.stream);
  std::vector<float> ca(nc), cb(nc), ck(nc);
  for (std::size_t c = 0; c < nc; ++c) {
    const double is = invstd_h.data_as<float>()[c];
    ca[c] = static_cast<float>(gamma_h.data_as<float>()[c] * is);
    cb[c] = static_cast<float>(s[c] / n);
    ck[c] = static_cast<float>(is * s[nc + c] / n);
  }
  Tensor dx = Tensor::empty(m_x.shape(), m_x.dtype(), dev);
  kernels::batchnorm_bwd_data(m_params.relu, m_x, m_y, dy, m_save_mean, channel_values(ca, dev),
                              channel_values(cb, dev), channel_values(ck, dev), dx, rs.stream);
  m_x = m_y = Tensor();
  m_count = 0;
  return dx;
}

void BatchNorm::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&m_gamma);
  out.push_back(&m_beta);
}

void BatchNorm::collect_buffers(std::vector<Buffer>& out) {
  for (std::size_t t = 0; t < m_running_mean.size(); ++t) {
    const int task = static_cast<int>(t);
    out.push_back({str(m_name, ".running_mean.task", t), &m_running_mean[t], m_gamma.owner, task});
    out.push_back({str(m_name, ".running_var.task", t), &m_running_var[t], m_gamma.owner, task});
  }
}

Linear::Linear(std::string name, int in_features, int out_features, std::mt19937_64& rng) {
  // PyTorch's default for the final classifier: uniform in +-1/sqrt(fan_in); He-normal/sqrt(2) is
  // close and keeps one initialiser.
  m_weight =
      make_parameter(name + ".weight", he_normal({out_features, in_features}, in_features, rng, 0.70710678f), true);
  m_bias = make_parameter(name + ".bias", constant({out_features}, 0.0f), false);
}

Tensor Linear::forward(const RunState& rs, const Tensor& x) {
  Tensor y = Tensor::empty({x.dim(0), m_weight.value.dim(0)}, x.dtype(), x.device());
  kernels::linear_fwd(x, m_weight.operand(x.dtype()), m_bias.value, y, rs.stream);
  if (rs.training) m_x = x;
  return y;
}

void Linear::backward(const RunState& rs, const Tensor& dy, Tensor* dx, kernels::GradMode dx_mode) {
  GPPF_CHECK(m_x.defined(), m_weight.name, ": backward without a training forward");
  if (dx) kernels::linear_bwd_data(dy, m_weight.operand(dy.dtype()), *dx, dx_mode, rs.stream);
  const auto mode = m_weight.take_grad_mode();
  m_bias.take_grad_mode();
  kernels::linear_bwd_weight(m_x, dy, m_weight.grad, &m_bias.grad, mode, rs.stream);
  m_x = Tensor();
}

void Linear::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&m_weight);
  out.push_back(&m_bias);
}

}  // namespace gppf::nn
