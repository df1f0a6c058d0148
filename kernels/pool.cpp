#include "kernels/pool.hpp"

#include "core/graph.hpp"

namespace gppf::kernels {
namespace {

void check_params(const char* op, const Pool2dParams& p) {
  GPPF_CHECK(p.kernel_h > 0 && p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0, op,
             ": kernel and stride must be positive, got kernel ", p.kernel_h, "x", p.kernel_w, " stride ", p.stride_h,
             "x", p.stride_w);
  GPPF_CHECK(p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= p.kernel_h && 2 * p.pad_w <= p.kernel_w, op,
             ": padding must be in [0, kernel/2], got pad ", p.pad_h, "x", p.pad_w, " for kernel ", p.kernel_h, "x",
             p.kernel_w);
}

void check_image(const char* op, const char* what, const Tensor& t) {
  GPPF_CHECK(t.defined() && t.ndim() == 4, op, ": ", what, " must be NHWC [N,H,W,C], got ",
             t.defined() ? t.desc() : std::string("an undefined tensor"));
  GPPF_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, op, ": ", what, " must be f32 or bf16, got ",
             t.desc());
}

void check_like(const char* op, const char* what, const Tensor& t, const Tensor& ref, const Shape& shape) {
  check_shape(op, what, t, shape);
  check_dtype(op, what, t, ref.dtype());
  check_same_device(op, ref, t);
}

}  // namespace

Shape pool2d_output_shape(const Pool2dParams& p, const Shape& x) {
  check_params("pool2d_output_shape", p);
  GPPF_CHECK(x.size() == 4, "pool2d_output_shape: x must be NHWC [N,H,W,C], got ", shape_str(x));
  const std::int64_t oh = (x[1] + 2 * p.pad_h - p.kernel_h) / p.stride_h + 1;
  const std::int64_t ow = (x[2] + 2 * p.pad_w - p.kernel_w) / p.stride_w + 1;
  GPPF_CHECK(x[1] + 2 * p.pad_h >= p.kernel_h && x[2] + 2 * p.pad_w >= p.kernel_w, "pool2d_output_shape: window ",
             p.kernel_h, "x", p.kernel_w, " with pad ", p.pad_h, "x", p.pad_w, " does not fit input ", shape_str(x));
  return {x[0], oh, ow, x[3]};
}

void maxpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y, const Stream& s) {
  constexpr const char* op = "maxpool2d_fwd";
  check_image(op, "x", x);
  check_like(op, "y", y, x, pool2d_output_shape(p, x.shape()));
  if (x.numel() == 0) return;
  if (launch_on_cuda(x.device()))
    cuda::maxpool2d_fwd(p, x, y, s);
  else
    runtime::host_launch([p, x, y]() mutable { host::maxpool2d_fwd(p, x, y); });
}

void maxpool2d_bwd(const Pool2dParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                   const Stream& s) {
  constexpr const char* op = "maxpool2d_bwd";
  check_image(op, "x", x);
  const Shape out = pool2d_output_shape(p, x.shape());
  check_like(op, "y", y, x, out);
  check_like(op, "dy", dy, x, out);
  check_like(op, "dx", dx, x, x.shape());
  if (x.numel() == 0) return;
  if (launch_on_cuda(x.device()))
    cuda::maxpool2d_bwd(p, x, y, dy, dx, s);
  else
    runtime::host_launch([p, x, y, dy, dx]() mutable { host::maxpool2d_bwd(p, x, y, dy, dx); });
}

void avgpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y, const Stream& s) {
  constexpr const char* op = "avgpool2d_fwd";
  check_image(op, "x", x);
  check_like(op, "y", y, x, pool2d_output_shape(p, x.shape()));
  if (x.numel() == 0) return;
  if (launch_on_cuda(x.device()))
    cuda::avgpool2d_fwd(p, x, y, s);
  else
    runtime::host_launch([p, x, y]() mutable { host::avgpool2d_fwd(p, x, y); });
}

void avgpool2d_bwd(const Pool2dParams& p, const Tensor& dy, Tensor& dx, const Stream& s) {
  constexpr const char* op = "avgpool2d_bwd";
  check_image(op, "dx", dx);
  check_like(op, "dy", dy, dx, pool2d_output_shape(p, dx.shape()));
  if (dx.numel() == 0) return;
  if (launch_on_cuda(dx.device()))
    cuda::avgpool2d_bwd(p, dy, dx, s);
  else
    runtime::host_launch([p, dy, dx]() mutable { host::avgpool2d_bwd(p, dy, dx); });
}

void global_avgpool_fwd(const Tensor& x, Tensor& y, const Stream& s) {
  constexpr const char* op = "global_avgpool_fwd";
  check_image(op, "x", x);
  GPPF_CHECK(x.dim(1) * x.dim(2) > 0, op, ": x ", x.desc(), " has no pixels to average");
  check_like(op, "y", y, x, {x.dim(0), x.dim(3)});
  if (x.numel() == 0) return;
  if (launch_on_cuda(x.device()))
    cuda::global_avgpool_fwd(x, y, s);
  else
    runtime::host_launch([x, y]() mutable { host::global_avgpool_fwd(x, y); });
}

void global_avgpool_bwd(const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s) {
  constexpr const char* op = "global_avgpool_bwd";
  check_image(op, "dx", dx);
  GPPF_CHECK(dx.dim(1) * dx.dim(2) > 0, op, ": dx ", dx.desc(), " has no pixels");
  check_like(op, "dy", dy, dx, {dx.dim(0), dx.dim(3)});
  if (dx.numel() == 0) return;
  if (launch_on_cuda(dx.device()))
    cuda::global_avgpool_bwd(dy, dx, mode, s);
  else
    runtime::host_launch([dy, dx, mode]() mutable { host::global_avgpool_bwd(dy, dx, mode); });
}

}  // namespace gppf::kernels
