#include "kernels/resample.hpp"

#include "core/graph.hpp"

namespace gppf::kernels {
namespace {

void check_images(const char* op, const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  GPPF_CHECK(a.defined() && b.defined(), op, ": undefined ", a.defined() ? b_name : a_name);
  GPPF_CHECK(a.ndim() == 4 && b.ndim() == 4, op, ": ", a_name, " and ", b_name, " must be NHWC, got ", a.desc(),
             " and ", b.desc());
  GPPF_CHECK(a.dim(0) == b.dim(0) && a.dim(3) == b.dim(3), op, ": ", a_name, " ", a.desc(), " and ", b_name, " ",
             b.desc(), " differ in batch or channels");
  check_same_device(op, a, b);
  check_dtype(op, b_name, b, a.dtype());
  if (launch_on_cuda(a.device()))
    GPPF_CHECK(a.dtype() == DType::F32 || a.dtype() == DType::BF16, op, ": ", a.desc(), " must be f32 or bf16 on CUDA");
  else
    check_dtype(op, a_name, a, DType::F32);
  // An empty input cannot be resized into a non-empty output.
  GPPF_CHECK(b.numel() == 0 || (a.dim(1) > 0 && a.dim(2) > 0), op, ": cannot resize ", a.desc(), " into ", b.desc());
}

}  // namespace

const char* upsample_mode_name(UpsampleMode mode) { return mode == UpsampleMode::Nearest ? "nearest" : "bilinear"; }

void upsample_fwd(const UpsampleParams& p, const Tensor& x, Tensor& y, const Stream& s) {
  check_images("upsample_fwd", x, "x", y, "y");
  if (y.numel() == 0) return;
  if (launch_on_cuda(x.device()))
    cuda::upsample_fwd(p, x, y, s);
  else
    runtime::host_launch([p, x, y]() mutable { host::upsample_fwd(p, x, y); });
}

void upsample_bwd(const UpsampleParams& p, const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s) {
  check_images("upsample_bwd", dx, "dx", dy, "dy");
  if (dx.numel() == 0) return;
  const bool acc = mode == GradMode::Accumulate;
  if (dy.numel() == 0) {  // nothing flows back
    if (!acc) dx.zero_(s);
    return;
  }
  if (launch_on_cuda(dy.device()))
    cuda::upsample_bwd(p, dy, dx, acc, s);
  else
    runtime::host_launch([p, dy, dx, acc]() mutable { host::upsample_bwd(p, dy, dx, acc); });
}

}  // namespace gppf::kernels
