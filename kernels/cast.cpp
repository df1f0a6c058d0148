#include "kernels/cast.hpp"

#include "core/graph.hpp"
#include "kernels/common.hpp"

namespace gppf::kernels {

FloatKind float_kind(const char* op, DType dtype) {
  switch (dtype) {
    case DType::F32: return FloatKind::F32;
    case DType::BF16: return FloatKind::BF16;
    case DType::F16: return FloatKind::F16;
    default: GPPF_THROW(op, ": dtype ", dtype_name(dtype), " is not a floating type (f32, bf16, f16)");
  }
}

void cast(const Tensor& src, Tensor& dst, const Stream& stream) {
  GPPF_CHECK(src.numel() == dst.numel(), "cast: ", src.desc(), " into ", dst.desc(), ": element counts differ");
  check_same_device("cast", src, dst);
  if (launch_on_cuda(src.device()))
    cuda::cast(src, dst, stream);
  else
    runtime::host_launch([src, dst]() mutable { host::cast(src, dst); });
}

Tensor cast(const Tensor& src, DType dtype, const Stream& stream) {
  Tensor dst = Tensor::empty(src.shape(), dtype, src.device());
  cast(src, dst, stream);
  return dst;
}

}  // namespace gppf::kernels
