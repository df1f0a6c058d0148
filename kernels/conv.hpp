#pragma once
// 2-D convolution (cross-correlation, as cuDNN and oneDNN define it), forward and both backward
// passes, on NHWC activations and OHWI weights. Grouped and depthwise convolutions are groups > 1.
//
//   x: [N,H,W,C]   w: [K,R,S,C/groups]   bias: [K]   y: [N,P,Q,K]
//   P = (H + 2*pad_h - dilation_h*(R-1) - 1) / stride_h + 1   (Q likewise)
//
// Host: f32 only (oneDNN when built with it, else im2col + OpenBLAS SGEMM). CUDA: cuDNN, with x, w,
// y (and dx, dw) all f32 or all bf16 (f32 accumulation); bias and dbias f32 or the activations' dtype.
#include <cstdint>

#include "kernels/common.hpp"

namespace gppf::kernels {

struct Conv2dParams {
  int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1, groups = 1;
};

// x: [N,H,W,C] NHWC; w: [K,R,S,C/groups] (OHWI); y: [N,P,Q,K]
Shape conv2d_output_shape(const Conv2dParams& p, const Shape& x, const Shape& w);
// bias: [K] or an undefined Tensor. y is overwritten.
void conv2d_fwd(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y,
                const Stream& s = Stream::host());
// dx written or accumulated per `mode` (accumulate lets a lego layer sum its input gradients in place).
void conv2d_bwd_data(const Conv2dParams& p, const Tensor& dy, const Tensor& w, Tensor& dx, GradMode mode,
                     const Stream& s = Stream::host());
// dw (and dbias when non-null) written or accumulated per `mode`.
void conv2d_bwd_filter(const Conv2dParams& p, const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias,
                       GradMode mode, const Stream& s = Stream::host());

// Every size of one convolution, validated: what the backends and the reference work from.
struct Conv2dGeometry {
  std::int64_t n = 0, h = 0, w = 0, c = 0;  // input
  std::int64_t k = 0, r = 0, s = 0;         // filters: k outputs of r x s x (c / groups)
  std::int64_t p = 0, q = 0;                // output height, width
  std::int64_t groups = 1;
  std::int64_t cg() const { return c / groups; }
  std::int64_t kg() const { return k / groups; }
  // Multiply-adds times two, for GFLOP/s (the same for all three passes).
  double flops() const { return 2.0 * static_cast<double>(n * p * q * k) * static_cast<double>(r * s * cg()); }
  Shape x_shape() const { return {n, h, w, c}; }
  Shape w_shape() const { return {k, r, s, c / groups}; }
  Shape y_shape() const { return {n, p, q, k}; }
};

// Throws gppf::Error naming `op` and the shapes when the params or shapes do not make a convolution.
Conv2dGeometry conv2d_geometry(const char* op, const Conv2dParams& p, const Shape& x, const Shape& w);

// Backends; the public entry points above check shapes, dtypes and devices, then call these.
namespace host {
// oneDNN when built with it, else the GEMM path below.
void conv2d_fwd(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* w, const float* bias,
                float* y);
void conv2d_bwd_data(const Conv2dParams& p, const Conv2dGeometry& g, const float* dy, const float* w, float* dx,
                     GradMode mode);
void conv2d_bwd_filter(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* dy, float* dw,
                       float* dbias, GradMode mode);
// im2col/col2im + OpenBLAS SGEMM + OpenMP: the fallback where oneDNN is missing (the GPU machine).
void gemm_conv2d_fwd(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* w, const float* bias,
                     float* y);
void gemm_conv2d_bwd_data(const Conv2dParams& p, const Conv2dGeometry& g, const float* dy, const float* w, float* dx,
                          GradMode mode);
void gemm_conv2d_bwd_filter(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* dy, float* dw,
                            float* dbias, GradMode mode);
// True when the host entry points use oneDNN.
bool conv2d_uses_onednn();
// dbias[k] (=|+=) the sum over rows of dy[rows, k], in f64, deterministic for a thread count.
void bias_grad(const float* dy, std::int64_t rows, std::int64_t k, float* dbias, bool accumulate);
// 1x1, stride 1, groups 1, at most 16 outputs from 32 or 64 inputs (the heads' read-outs): the
// host entry points run these gradients with kernels of their own on both builds
// (kernels/host/pointwise_few_outputs.cpp).
bool pointwise_few_outputs(const Conv2dParams& p, const Conv2dGeometry& g);
void pointwise_few_outputs_bwd_data(const Conv2dGeometry& g, const float* dy, const float* w, float* dx, GradMode mode);
void pointwise_few_outputs_bwd_filter(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* dbias,
                                      GradMode mode);
}  // namespace host

#ifdef GPPF_HAVE_ONEDNN
namespace onednn {
// oneDNN primitives on NHWC/OHWI memory, cached per shape and params (kernels/host/onednn_conv.cpp).
void conv2d_fwd(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* w, const float* bias,
                float* y);
void conv2d_bwd_data(const Conv2dParams& p, const Conv2dGeometry& g, const float* dy, const float* w, float* dx,
                     GradMode mode);
void conv2d_bwd_filter(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* dy, float* dw,
                       float* dbias, GradMode mode);
}  // namespace onednn
#endif

namespace cuda {
void conv2d_fwd(const Conv2dParams& p, const Conv2dGeometry& g, const Tensor& x, const Tensor& w, const Tensor& bias,
                Tensor& y, const Stream& s);
void conv2d_bwd_data(const Conv2dParams& p, const Conv2dGeometry& g, const Tensor& dy, const Tensor& w, Tensor& dx,
                     GradMode mode, const Stream& s);
void conv2d_bwd_filter(const Conv2dParams& p, const Conv2dGeometry& g, const Tensor& x, const Tensor& dy, Tensor& dw,
                       Tensor* dbias, GradMode mode, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
