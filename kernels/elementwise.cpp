#include "kernels/elementwise.hpp"

#include "core/graph.hpp"

namespace gppf::kernels {
namespace {

// f32 on the host; f32 or bf16 on CUDA; on `ref`'s device.
void check_operand(const char* op, const char* what, const Tensor& t, const Tensor& ref) {
  GPPF_CHECK(t.defined(), op, ": ", what, " is undefined");
  check_same_device(op, t, ref);
  if (t.device().is_cuda())
    GPPF_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, op, ": ", what,
               " must be f32 or bf16 on CUDA, got ", t.desc());
  else
    check_dtype(op, what, t, DType::F32);
}

void check_like(const char* op, const char* what, const Tensor& t, const Tensor& ref) {
  check_operand(op, what, t, ref);
  check_shape(op, what, t, ref.shape());
  check_dtype(op, what, t, ref.dtype());
}

}  // namespace

// The CUDA stream of a call made with the default Stream::host(): the legacy stream of the tensor's
// device (the cuBLAS handles and scratch memory are per device).
Stream device_stream(const Stream& s, const Tensor& t) { return s.device.is_cuda() ? s : Stream{t.device(), nullptr}; }

void relu_fwd(const Tensor& x, Tensor& y, const Stream& s) {
  check_operand("relu_fwd", "x", x, x);
  check_like("relu_fwd", "y", y, x);
  if (launch_on_cuda(x.device()))
    cuda::relu_fwd(x, y, s);
  else
    runtime::host_launch([x, y]() mutable { host::relu_fwd(x, y); });
}

void relu_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s) {
  check_operand("relu_bwd", "y", y, y);
  check_like("relu_bwd", "dy", dy, y);
  check_like("relu_bwd", "dx", dx, y);
  const bool acc = mode == GradMode::Accumulate;
  if (launch_on_cuda(y.device()))
    cuda::relu_bwd(y, dy, dx, acc, s);
  else
    runtime::host_launch([y, dy, dx, acc]() mutable { host::relu_bwd(y, dy, dx, acc); });
}

namespace {
void add_impl(const char* op, const Tensor& a, const Tensor& b, Tensor& y, bool relu, const Stream& s) {
  check_operand(op, "a", a, a);
  check_like(op, "b", b, a);
  check_like(op, "y", y, a);
  if (launch_on_cuda(a.device()))
    cuda::add(a, b, y, relu, s);
  else
    runtime::host_launch([a, b, y, relu]() mutable { host::add(a, b, y, relu); });
}
}  // namespace

void add(const Tensor& a, const Tensor& b, Tensor& y, const Stream& s) { add_impl("add", a, b, y, false, s); }

void add_relu_fwd(const Tensor& a, const Tensor& b, Tensor& y, const Stream& s) {
  add_impl("add_relu_fwd", a, b, y, true, s);
}

void axpby(float alpha, const Tensor& x, float beta, Tensor& y, const Stream& s) {
  check_operand("axpby", "x", x, x);
  check_operand("axpby", "y", y, x);
  check_shape("axpby", "y", y, x.shape());
  if (launch_on_cuda(x.device()))
    cuda::axpby(alpha, x, beta, y, s);
  else
    runtime::host_launch([alpha, x, beta, y]() mutable { host::axpby(alpha, x, beta, y); });
}

void axpby_scalar(const Tensor& alpha, const Tensor& x, float beta, Tensor& y, const Stream& s) {
  check_operand("axpby_scalar", "x", x, x);
  check_operand("axpby_scalar", "y", y, x);
  check_shape("axpby_scalar", "y", y, x.shape());
  check_operand("axpby_scalar", "alpha", alpha, x);
  check_shape("axpby_scalar", "alpha", alpha, {1});
  check_dtype("axpby_scalar", "alpha", alpha, DType::F32);
  if (launch_on_cuda(x.device()))
    cuda::axpby_scalar(alpha, x, beta, y, s);
  else
    // alpha is read when the work runs (as the CUDA kernel does): a replay sees its current value.
    runtime::host_launch([alpha, x, beta, y]() mutable { host::axpby(alpha.data_as<float>()[0], x, beta, y); });
}

void fill(Tensor& y, float value, const Stream& s) {
  check_operand("fill", "y", y, y);
  if (launch_on_cuda(y.device()))
    cuda::fill(y, value, s);
  else
    runtime::host_launch([y, value]() mutable { host::fill(y, value); });
}

void dot(const Tensor& a, const Tensor& b, Tensor& out, GradMode mode, const Stream& s) {
  check_operand("dot", "a", a, a);
  check_like("dot", "b", b, a);
  check_operand("dot", "out", out, a);
  check_shape("dot", "out", out, {1});
  check_dtype("dot", "out", out, DType::F32);
  const bool acc = mode == GradMode::Accumulate;
  if (launch_on_cuda(a.device()))
    cuda::dot(a, b, out, acc, device_stream(s, a));
  else
    runtime::host_launch([a, b, out, acc]() mutable { host::dot(a, b, out, acc); });
}

void reduce_rows(const Tensor& x, Tensor& y, GradMode mode, const Stream& s) {
  check_operand("reduce_rows", "x", x, x);
  GPPF_CHECK(x.ndim() >= 1, "reduce_rows: x must have at least one dimension, got ", x.desc());
  check_operand("reduce_rows", "y", y, x);
  check_shape("reduce_rows", "y", y, {x.dim(-1)});
  const bool acc = mode == GradMode::Accumulate;
  if (launch_on_cuda(x.device()))
    cuda::reduce_rows(x, y, acc, device_stream(s, x));
  else
    runtime::host_launch([x, y, acc]() mutable { host::reduce_rows(x, y, acc); });
}

}  // namespace gppf::kernels
