#pragma once
// Element-type conversion between the floating types (f32, bf16, f16), on the tensor's device.
// Also the worked example of the kernel pattern: a functor in kernels/functors/, a host entry in
// kernels/host/, a CUDA entry in kernels/cuda/, dispatch on the device in one place.
#include "core/tensor.hpp"
#include "kernels/functors/cast.hpp"

namespace gppf::kernels {

// dst must have src's numel and live on src's device; dtypes may be any of f32, bf16, f16.
void cast(const Tensor& src, Tensor& dst, const Stream& stream = Stream::host());
Tensor cast(const Tensor& src, DType dtype, const Stream& stream = Stream::host());

// The storage kind of a floating dtype; throws naming `op` for integer dtypes.
FloatKind float_kind(const char* op, DType dtype);

namespace host {
void cast(const Tensor& src, Tensor& dst);
}
namespace cuda {
void cast(const Tensor& src, Tensor& dst, const Stream& stream);
}

}  // namespace gppf::kernels
