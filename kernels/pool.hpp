#pragma once
// 2-D max and average pooling and global average pooling over NHWC tensors. The CUDA backend takes
// f32 or bf16, the host f32 or bf16 (math in f32); x, y, dx, dy share one dtype.
#include "kernels/common.hpp"

namespace gppf::kernels {

// Output size is floor((H + 2 pad - kernel) / stride) + 1 (PyTorch's default, cuDNN's only mode).
// Padding must be at most half the window, so that every window holds at least one input.
// count_include_pad: average pooling divides by kernel_h * kernel_w instead of the in-image count.
struct Pool2dParams {
  int kernel_h = 2, kernel_w = 2, stride_h = 2, stride_w = 2, pad_h = 0, pad_w = 0;
  bool count_include_pad = false;
};

Shape pool2d_output_shape(const Pool2dParams& p, const Shape& x);  // x NHWC
void maxpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y, const Stream& s = Stream::host());
// Gradient goes to the first maximum of each window (ties: lowest index); dx overwritten.
void maxpool2d_bwd(const Pool2dParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                   const Stream& s = Stream::host());
void avgpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y, const Stream& s = Stream::host());
void avgpool2d_bwd(const Pool2dParams& p, const Tensor& dy, Tensor& dx, const Stream& s = Stream::host());
// x [N,H,W,C] -> y [N,C]; backward spreads dy/(H*W), dx written or accumulated per mode.
void global_avgpool_fwd(const Tensor& x, Tensor& y, const Stream& s = Stream::host());
void global_avgpool_bwd(const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s = Stream::host());

// Backends: arguments already checked by the entry points above.
namespace host {
void maxpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y);
void maxpool2d_bwd(const Pool2dParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx);
void avgpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y);
void avgpool2d_bwd(const Pool2dParams& p, const Tensor& dy, Tensor& dx);
void global_avgpool_fwd(const Tensor& x, Tensor& y);
void global_avgpool_bwd(const Tensor& dy, Tensor& dx, GradMode mode);
}  // namespace host
namespace cuda {
void maxpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y, const Stream& s);
void maxpool2d_bwd(const Pool2dParams& p, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                   const Stream& s);
void avgpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y, const Stream& s);
void avgpool2d_bwd(const Pool2dParams& p, const Tensor& dy, Tensor& dx, const Stream& s);
void global_avgpool_fwd(const Tensor& x, Tensor& y, const Stream& s);
void global_avgpool_bwd(const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
