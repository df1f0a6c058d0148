#include "src/nn/colour_conv.hpp"

#include "kernels/cast.hpp"
#include "kernels/linear.hpp"

namespace gppf::nn {

ColourConv::ColourConv(std::string name, int out_channels, int kernel, int stride, int padding, std::mt19937_64& rng)
    : m_name(std::move(name)) {
  m_params.stride_h = m_params.stride_w = stride;
  m_params.pad_h = m_params.pad_w = padding;
  m_weight = make_parameter(
      m_name + ".weight",
      he_normal({out_channels, kernel, kernel, 3}, static_cast<std::int64_t>(kernel) * kernel * 3, rng), true);
}

const Tensor& ColourConv::ones(DType dtype, Device device, const Stream& s) {
  for (const Tensor& t : m_ones)
    if (t.dtype() == dtype && t.device() == device) return t;
  Tensor t = Tensor::from_vector({3}, {1.0f, 1.0f, 1.0f});
  if (!device.is_host()) t = t.to(device, s);
  m_ones.push_back(dtype == DType::F32 ? t : kernels::cast(t, dtype, s));
  return m_ones.back();
}

Shape ColourConv::output_shape(const Shape& x) const {
  Shape w = m_weight.value.shape();
  w[3] = x[3];
  return kernels::conv2d_output_shape(m_params, x, w);
}

std::int64_t ColourConv::macs(const Shape& x) const {
  const Shape& w = m_weight.value.shape();
  return shape_numel(output_shape(x)) * w[1] * w[2] * x[3];
}

Tensor ColourConv::forward(const RunState& rs, const Tensor& x) {
  GPPF_CHECK(x.ndim() == 4 && (x.dim(3) == 1 || x.dim(3) == 3), m_name, ": input expected [N,H,W,1] or [N,H,W,3], got ",
             x.desc());
  const Tensor& v = m_weight.value;
  Tensor w;
  if (x.dim(3) == 3) {
    w = m_weight.operand(x.dtype());
  } else {  // [C, k, k, 3] -> [C, k, k, 1], the input channels summed
    w = Tensor::empty({v.dim(0), v.dim(1), v.dim(2), 1}, DType::F32, v.device());
    Tensor w_col = w.reshape({-1, 1});
    kernels::gemm(false, false, 1.0f, v.reshape({-1, 3}), ones(DType::F32, v.device(), rs.stream).reshape({3, 1}), 0.0f,
                  w_col, rs.stream);
  }
  if (w.device() != x.device()) w = w.to(x.device(), rs.stream);
  if (w.dtype() != x.dtype()) w = kernels::cast(w, x.dtype(), rs.stream);
  Tensor y = Tensor::empty(output_shape(x.shape()), x.dtype(), x.device());
  kernels::conv2d_fwd(m_params, x, w, Tensor(), y, rs.stream);
  if (rs.training) {
    m_x = x;
    m_w_used = w;
  }
  return y;
}

void ColourConv::backward(const RunState& rs, const Tensor& dy) {
  GPPF_CHECK(m_x.defined(), m_name, ": backward without a training forward");
  if (!m_weight.trainable) {  // frozen (gppf finetune): no filter gradient, as in Conv2d
    m_x = m_w_used = Tensor();
    return;
  }
  const auto mode = m_weight.take_grad_mode();
  if (m_x.dim(3) == 3) {
    conv2d_filter_grad(m_params, m_x, dy, m_weight, nullptr, mode, rs.stream);
  } else {
    // d/dW_c of conv(x, sum_c W_c) is the same for every c.
    Tensor dw1 = Tensor::empty(m_w_used.shape(), m_x.dtype(), m_w_used.device());
    kernels::conv2d_bwd_filter(m_params, m_x, dy, dw1, nullptr, kernels::GradMode::Overwrite, rs.stream);
    Tensor g = m_weight.grad.reshape({-1, 3});
    kernels::gemm(false, false, 1.0f, dw1.reshape({-1, 1}), ones(dw1.dtype(), dw1.device(), rs.stream).reshape({1, 3}),
                  mode == kernels::GradMode::Overwrite ? 0.0f : 1.0f, g, rs.stream);
  }
  m_x = m_w_used = Tensor();
}

void ColourConv::collect_parameters(std::vector<Parameter*>& out) { out.push_back(&m_weight); }

}  // namespace gppf::nn
