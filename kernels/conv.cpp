#include "kernels/conv.hpp"

#include "core/graph.hpp"

namespace gppf::kernels {

Conv2dGeometry conv2d_geometry(const char* op, const Conv2dParams& p, const Shape& x, const Shape& w) {
  GPPF_CHECK(x.size() == 4 && w.size() == 4, op, ": x ", shape_str(x), " must be [N,H,W,C] and w ", shape_str(w),
             " [K,R,S,C/groups]");
  GPPF_CHECK(p.stride_h >= 1 && p.stride_w >= 1 && p.dilation_h >= 1 && p.dilation_w >= 1 && p.pad_h >= 0 &&
                 p.pad_w >= 0 && p.groups >= 1,
             op, ": stride ", p.stride_h, "x", p.stride_w, ", dilation ", p.dilation_h, "x", p.dilation_w, ", pad ",
             p.pad_h, "x", p.pad_w, ", groups ", p.groups, ": strides, dilations, groups must be >= 1, pads >= 0");
  Conv2dGeometry g;
  g.n = x[0], g.h = x[1], g.w = x[2], g.c = x[3];
  g.k = w[0], g.r = w[1], g.s = w[2];
  g.groups = p.groups;
  GPPF_CHECK(g.n > 0 && g.h > 0 && g.w > 0 && g.c > 0 && g.k > 0 && g.r > 0 && g.s > 0 && w[3] > 0, op, ": x ",
             shape_str(x), ", w ", shape_str(w), ": every dimension must be positive");
  GPPF_CHECK(g.c % g.groups == 0 && g.k % g.groups == 0, op, ": x ", shape_str(x), ", w ", shape_str(w), ": C=", g.c,
             " and K=", g.k, " must both be divisible by groups=", g.groups);
  GPPF_CHECK(w[3] == g.c / g.groups, op, ": w ", shape_str(w), " must have C/groups=", g.c / g.groups,
             " input channels for x ", shape_str(x), " with groups=", g.groups);
  const std::int64_t eff_r = static_cast<std::int64_t>(p.dilation_h) * (g.r - 1) + 1;
  const std::int64_t eff_s = static_cast<std::int64_t>(p.dilation_w) * (g.s - 1) + 1;
  const std::int64_t hp = g.h + 2 * static_cast<std::int64_t>(p.pad_h),
                     wp = g.w + 2 * static_cast<std::int64_t>(p.pad_w);
  GPPF_CHECK(hp >= eff_r && wp >= eff_s, op, ": x ", shape_str(x), " padded by ", p.pad_h, "x", p.pad_w,
             " is smaller than the dilated filter of w ", shape_str(w), " (", eff_r, "x", eff_s, ")");
  g.p = (hp - eff_r) / p.stride_h + 1;
  g.q = (wp - eff_s) / p.stride_w + 1;
  return g;
}

Shape conv2d_output_shape(const Conv2dParams& p, const Shape& x, const Shape& w) {
  return conv2d_geometry("conv2d_output_shape", p, x, w).y_shape();
}

namespace {

void check_bias(const char* op, const char* what, const Tensor& b, const Conv2dGeometry& g, const Tensor& like) {
  check_shape(op, what, b, {g.k});
  check_same_device(op, like, b);
  if (like.device().is_host()) {
    check_dtype(op, what, b, DType::F32);
  } else {
    GPPF_CHECK(b.dtype() == DType::F32 || b.dtype() == like.dtype(), op, ": ", what, " ", b.desc(), " must be f32 or ",
               dtype_name(like.dtype()));
  }
}

// Host: every tensor f32. CUDA: all f32 or all bf16.
void check_data(const char* op, const char* what, const Tensor& t, const Tensor& like) {
  check_same_device(op, like, t);
  if (like.device().is_host()) {
    check_dtype(op, what, t, DType::F32);
  } else {
    GPPF_CHECK(like.dtype() == DType::F32 || like.dtype() == DType::BF16, op, ": ", like.desc(),
               ": CUDA convolutions take f32 or bf16");
    check_dtype(op, what, t, like.dtype());
  }
}

}  // namespace

void conv2d_fwd(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y,
                const Stream& s) {
  const char* op = "conv2d_fwd";
  const Conv2dGeometry g = conv2d_geometry(op, p, x.shape(), w.shape());
  check_data(op, "x", x, x);
  check_data(op, "w", w, x);
  check_data(op, "y", y, x);
  check_shape(op, "y", y, g.y_shape());
  if (bias.defined()) check_bias(op, "bias", bias, g, x);
  if (launch_on_cuda(x.device())) {
    cuda::conv2d_fwd(p, g, x, w, bias, y, s);
    return;
  }
  // The tensors, not their data pointers, so that a captured graph keeps their memory.
  runtime::host_launch([p, g, x, w, bias, y] {
    host::conv2d_fwd(p, g, x.data_as<float>(), w.data_as<float>(), bias.defined() ? bias.data_as<float>() : nullptr,
                     y.data_as<float>());
  });
}

void conv2d_bwd_data(const Conv2dParams& p, const Tensor& dy, const Tensor& w, Tensor& dx, GradMode mode,
                     const Stream& s) {
  const char* op = "conv2d_bwd_data";
  const Conv2dGeometry g = conv2d_geometry(op, p, dx.shape(), w.shape());
  check_data(op, "dy", dy, dy);
  check_data(op, "w", w, dy);
  check_data(op, "dx", dx, dy);
  check_shape(op, "dy", dy, g.y_shape());
  if (launch_on_cuda(dy.device())) {
    cuda::conv2d_bwd_data(p, g, dy, w, dx, mode, s);
    return;
  }
  runtime::host_launch([p, g, dy, w, dx, mode] {
    host::conv2d_bwd_data(p, g, dy.data_as<float>(), w.data_as<float>(), dx.data_as<float>(), mode);
  });
}

void conv2d_bwd_filter(const Conv2dParams& p, const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias,
                       GradMode mode, const Stream& s) {
  const char* op = "conv2d_bwd_filter";
  const Conv2dGeometry g = conv2d_geometry(op, p, x.shape(), dw.shape());
  check_data(op, "x", x, x);
  check_data(op, "dy", dy, x);
  check_data(op, "dw", dw, x);
  check_shape(op, "dy", dy, g.y_shape());
  // A null pointer or an undefined tensor both mean "no bias".
  if (dbias && !dbias->defined()) dbias = nullptr;
  if (dbias) check_bias(op, "dbias", *dbias, g, x);
  if (launch_on_cuda(x.device())) {
    cuda::conv2d_bwd_filter(p, g, x, dy, dw, dbias, mode, s);
    return;
  }
  runtime::host_launch([p, g, x, dy, dw, db = dbias ? *dbias : Tensor(), mode] {
    host::conv2d_bwd_filter(p, g, x.data_as<float>(), dy.data_as<float>(), dw.data_as<float>(),
                            db.defined() ? db.data_as<float>() : nullptr, mode);
  });
}

}  // namespace gppf::kernels
