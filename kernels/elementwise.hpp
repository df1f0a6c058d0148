#pragma once
// Element-wise ops and the small reductions that training needs around them (routing-gate and bias
// gradients). Host tensors are f32; CUDA tensors are f32 or bf16, every operand of one call in the
// same dtype except where noted. All tensors of one call live on one device.
#include "kernels/common.hpp"

namespace gppf::kernels {

void relu_fwd(const Tensor& x, Tensor& y, const Stream& s = Stream::host());
// dx = dy * (y > 0); written or accumulated per mode.
void relu_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s = Stream::host());
// y = a + b
void add(const Tensor& a, const Tensor& b, Tensor& y, const Stream& s = Stream::host());
// y = relu(a + b); its backward is relu_bwd on y.
void add_relu_fwd(const Tensor& a, const Tensor& b, Tensor& y, const Stream& s = Stream::host());
// y = alpha * x + beta * y (beta = 0 ignores y's old content, even NaN). x and y may differ in dtype
// on CUDA (e.g. a bf16 gradient accumulated into an f32 buffer).
void axpby(float alpha, const Tensor& x, float beta, Tensor& y, const Stream& s = Stream::host());
// Same, with alpha read from a device/host f32 scalar tensor [1] (a routing gate): y = alpha[0]*x + beta*y.
// On CUDA the kernel reads alpha; the host never waits for it.
void axpby_scalar(const Tensor& alpha, const Tensor& x, float beta, Tensor& y, const Stream& s = Stream::host());
void fill(Tensor& y, float value, const Stream& s = Stream::host());
// out[0] = sum(a * b) (f32 [1]), written or accumulated per mode (gradient of a routing gate).
// Deterministic: fixed reduction order independent of the thread count; accumulated in double.
void dot(const Tensor& a, const Tensor& b, Tensor& out, GradMode mode, const Stream& s = Stream::host());
// Sum over all but the last dim: x [..., C] -> y [C], per mode (bias gradients). Deterministic, in
// double. On CUDA y may be f32 while x is bf16 (f32 parameter gradients of bf16 activations).
void reduce_rows(const Tensor& x, Tensor& y, GradMode mode, const Stream& s = Stream::host());

// `s` itself when it is a CUDA stream, else the legacy stream of t's device.
Stream device_stream(const Stream& s, const Tensor& t);

// Backends, called after the checks above. `accumulate` is GradMode::Accumulate.
namespace host {
void relu_fwd(const Tensor& x, Tensor& y);
void relu_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate);
void add(const Tensor& a, const Tensor& b, Tensor& y, bool relu);
void axpby(float alpha, const Tensor& x, float beta, Tensor& y);
void fill(Tensor& y, float value);
void dot(const Tensor& a, const Tensor& b, Tensor& out, bool accumulate);
void reduce_rows(const Tensor& x, Tensor& y, bool accumulate);
// y [R, C] = v[C] broadcast over the rows (the bias of linear_fwd).
void broadcast_rows(const Tensor& v, Tensor& y);
}  // namespace host
namespace cuda {
void relu_fwd(const Tensor& x, Tensor& y, const Stream& s);
void relu_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate, const Stream& s);
void add(const Tensor& a, const Tensor& b, Tensor& y, bool relu, const Stream& s);
void axpby(float alpha, const Tensor& x, float beta, Tensor& y, const Stream& s);
void axpby_scalar(const Tensor& alpha, const Tensor& x, float beta, Tensor& y, const Stream& s);
void fill(Tensor& y, float value, const Stream& s);
void dot(const Tensor& a, const Tensor& b, Tensor& out, bool accumulate, const Stream& s);
void reduce_rows(const Tensor& x, Tensor& y, bool accumulate, const Stream& s);
void broadcast_rows(const Tensor& v, Tensor& y, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
