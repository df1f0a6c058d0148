#include "kernels/attention.hpp"

#include <cmath>
#include <string>

#include "core/counters.hpp"
#include "core/graph.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/pool.hpp"

namespace gppf::kernels {
namespace {

std::string desc_of(const Tensor& t) { return t.defined() ? t.desc() : std::string("an undefined tensor"); }

// f32 or bf16 (both backends of the element-wise and row ops).
void check_float(const char* op, const char* what, const Tensor& t) {
  GPPF_CHECK(t.defined() && (t.dtype() == DType::F32 || t.dtype() == DType::BF16), op, ": ", what,
             " must be f32 or bf16, got ", desc_of(t));
}

void check_device(const char* op, const char* what, const Tensor& t, const Tensor& ref) {
  GPPF_CHECK(t.device() == ref.device(), op, ": ", what, " ", t.desc(), " must be on ", ref.device().str(), " with ",
             ref.desc());
}

// t: defined, of this shape, in ref's dtype, on ref's device.
void check_operand(const char* op, const char* what, const Tensor& t, const Shape& shape, const Tensor& ref) {
  GPPF_CHECK(t.defined(), op, ": ", what, " is undefined");
  check_shape(op, what, t, shape);
  check_dtype(op, what, t, ref.dtype());
  check_device(op, what, t, ref);
}

void check_like(const char* op, const char* what, const Tensor& t, const Tensor& ref) {
  check_operand(op, what, t, ref.shape(), ref);
}

// The GEMM inputs of bmm and sdpa: f32 on the host (OpenBLAS), f32 or bf16 on CUDA (cuBLAS).
void check_gemm_input(const char* op, const char* what, const Tensor& t) {
  check_float(op, what, t);
  GPPF_CHECK(t.device().is_cuda() || t.dtype() == DType::F32, op, ": ", what, " must be f32 on the host, got ",
             t.desc());
}

constexpr std::int64_t kMaxInt = 2147483647;  // BLAS and cuBLAS take 32-bit sizes and batch counts

}  // namespace

void gelu_fwd(const Tensor& x, Tensor& y, const Stream& s) {
  check_float("gelu_fwd", "x", x);
  check_like("gelu_fwd", "y", y, x);
  if (x.numel() == 0) return;
  if (launch_on_cuda(x.device()))
    cuda::gelu_fwd(x, y, device_stream(s, x));
  else
    runtime::host_launch([x, y]() mutable { host::gelu_fwd(x, y); });
}

void gelu_bwd(const Tensor& x, const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s) {
  check_float("gelu_bwd", "x", x);
  check_like("gelu_bwd", "dy", dy, x);
  check_like("gelu_bwd", "dx", dx, x);
  if (x.numel() == 0) return;
  const bool acc = mode == GradMode::Accumulate;
  if (launch_on_cuda(x.device()))
    cuda::gelu_bwd(x, dy, dx, acc, device_stream(s, x));
  else
    runtime::host_launch([x, dy, dx, acc]() mutable { host::gelu_bwd(x, dy, dx, acc); });
}

void softmax_fwd(const Tensor& x, Tensor& y, const Stream& s) {
  check_float("softmax_fwd", "x", x);
  GPPF_CHECK(x.ndim() >= 1, "softmax_fwd: x must be [..., L], got ", x.desc());
  check_like("softmax_fwd", "y", y, x);
  if (x.numel() == 0) return;
  if (launch_on_cuda(x.device()))
    cuda::softmax_fwd(x, y, device_stream(s, x));
  else
    runtime::host_launch([x, y]() mutable { host::softmax_fwd(x, y); });
}

void softmax_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, const Stream& s) {
  check_float("softmax_bwd", "y", y);
  GPPF_CHECK(y.ndim() >= 1, "softmax_bwd: y must be [..., L], got ", y.desc());
  check_like("softmax_bwd", "dy", dy, y);
  check_like("softmax_bwd", "dx", dx, y);
  if (y.numel() == 0) return;
  if (launch_on_cuda(y.device()))
    cuda::softmax_bwd(y, dy, dx, device_stream(s, y));
  else
    runtime::host_launch([y, dy, dx]() mutable { host::softmax_bwd(y, dy, dx); });
}

void bmm(const BmmParams& p, const Tensor& a, const Tensor& b, Tensor& c, const Stream& s) {
  constexpr const char* op = "bmm";
  check_gemm_input(op, "A", a);
  check_gemm_input(op, "B", b);
  check_device(op, "B", b, a);
  check_dtype(op, "B (same dtype as A)", b, a.dtype());
  GPPF_CHECK(c.defined(), op, ": C is undefined");
  check_device(op, "C", c, a);
  GPPF_CHECK(c.dtype() == DType::F32 || (c.dtype() == DType::BF16 && a.dtype() == DType::BF16), op, ": C ", c.desc(),
             " cannot be computed from ", a.desc(), " (f32 output, or bf16 from bf16 inputs)");
  GPPF_CHECK(a.ndim() >= 2 && b.ndim() == a.ndim(), op, ": A and B must be [..., rows, cols] with the same dims, got ",
             a.desc(), " and ", b.desc());
  const Shape lead(a.shape().begin(), a.shape().end() - 2);
  GPPF_CHECK(Shape(b.shape().begin(), b.shape().end() - 2) == lead, op, ": the leading (batch) dims of B ", b.desc(),
             " differ from A's ", a.desc());
  BmmShape g{p.trans_a,
             p.trans_b,
             shape_numel(lead),
             a.dim(p.trans_a ? -1 : -2),
             b.dim(p.trans_b ? -2 : -1),
             a.dim(p.trans_a ? -2 : -1)};
  GPPF_CHECK(b.dim(p.trans_b ? -1 : -2) == g.k, op, ": inner dimensions differ: op(A) of ", a.desc(),
             (p.trans_a ? " (transposed)" : ""), " and op(B) of ", b.desc(), (p.trans_b ? " (transposed)" : ""));
  Shape c_shape = lead;
  c_shape.push_back(g.m);
  c_shape.push_back(g.n);
  check_shape(op, "C", c, c_shape);
  GPPF_CHECK(g.batch <= kMaxInt && g.m <= kMaxInt && g.n <= kMaxInt && g.k <= kMaxInt, op, ": sizes batch=", g.batch,
             " m=", g.m, " n=", g.n, " k=", g.k, " exceed the 32-bit limit of BLAS; split the batch");
  if (c.numel() == 0) return;
  if (g.k == 0) {  // op(A) op(B) is all zeros
    if (p.beta == 0.0f)
      fill(c, 0.0f, s);
    else
      axpby(0.0f, c, p.beta, c, s);
    return;
  }
  if (launch_on_cuda(a.device()))
    cuda::bmm(g, p.alpha, a, b, p.beta, c, device_stream(s, a));
  else
    runtime::host_launch(
        [g, alpha = p.alpha, a, b, beta = p.beta, c]() mutable { host::bmm(g, alpha, a, b, beta, c); });
}

namespace {

float checked_scale(const char* op, const SdpaParams& p, std::int64_t head_dim) {
  GPPF_CHECK(p.scale >= 0.0f && std::isfinite(p.scale), op, ": scale must be finite and >= 0 (0: 1 / sqrt(Dh)), got ",
             p.scale);
  GPPF_CHECK(head_dim > 0, op, ": the head dim must be positive, got ", head_dim);
  return p.scale > 0.0f ? p.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

}  // namespace

float sdpa_scale(const SdpaParams& p, std::int64_t head_dim) { return checked_scale("sdpa_scale", p, head_dim); }

namespace {

// q [N, H, Tq, Dh], k [N, H, Tk, Dh], v [N, H, Tk, Dv], out-shaped [N, H, Tq, Dv] and probs
// [N, H, Tq, Tk] in q's dtype on q's device; returns the problem.
SdpaShape check_sdpa(const char* op, const SdpaParams& p, const Tensor& q, const Tensor& k, const Tensor& v,
                     const char* out_name, const Tensor& out, const Tensor& probs) {
  check_gemm_input(op, "q", q);
  GPPF_CHECK(q.ndim() == 4 && q.numel() > 0, op, ": q must be a non-empty [N, H, Tq, Dh], got ", q.desc());
  const std::int64_t n = q.dim(0), h = q.dim(1);
  GPPF_CHECK(k.defined() && k.ndim() == 4 && k.numel() > 0, op, ": k must be a non-empty [N, H, Tk, Dh], got ",
             desc_of(k));
  check_operand(op, "k", k, {n, h, k.dim(2), q.dim(3)}, q);
  GPPF_CHECK(v.defined() && v.ndim() == 4 && v.numel() > 0, op, ": v must be a non-empty [N, H, Tk, Dv], got ",
             desc_of(v));
  check_operand(op, "v", v, {n, h, k.dim(2), v.dim(3)}, q);
  const SdpaShape g{n * h, q.dim(2), k.dim(2), q.dim(3), v.dim(3), checked_scale(op, p, q.dim(3))};
  check_operand(op, out_name, out, {n, h, g.tq, g.dv}, q);
  check_operand(op, "probs", probs, {n, h, g.tq, g.tk}, q);
  GPPF_CHECK(g.batch <= kMaxInt && g.tq <= kMaxInt && g.tk <= kMaxInt && g.dh <= kMaxInt && g.dv <= kMaxInt, op,
             ": sizes N*H=", g.batch, " Tq=", g.tq, " Tk=", g.tk, " Dh=", g.dh, " Dv=", g.dv,
             " exceed the 32-bit limit of BLAS; split the batch");
  return g;
}

}  // namespace

void sdpa_fwd(const SdpaParams& p, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& probs,
              const Stream& s) {
  const SdpaShape g = check_sdpa("sdpa_fwd", p, q, k, v, "out", out, probs);
  runtime::count_launches(2);  // CUDA's scores GEMM, softmax kernel and output GEMM, counted on every device
  if (launch_on_cuda(q.device()))
    cuda::sdpa_fwd(g, q, k, v, out, probs, device_stream(s, q));
  else
    runtime::host_launch([g, q, k, v, out, probs]() mutable { host::sdpa_fwd(g, q, k, v, out, probs); });
}

void sdpa_bwd(const SdpaParams& p, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
              const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, const Stream& s) {
  constexpr const char* op = "sdpa_bwd";
  const SdpaShape g = check_sdpa(op, p, q, k, v, "dout", dout, probs);
  check_like(op, "dq", dq, q);
  check_like(op, "dk", dk, k);
  check_like(op, "dv", dv, v);
  runtime::count_launches(4);  // CUDA's four GEMMs and softmax backward kernel
  if (launch_on_cuda(q.device()))
    cuda::sdpa_bwd(g, q, k, v, probs, dout, dq, dk, dv, device_stream(s, q));
  else
    runtime::host_launch(
        [g, q, k, v, probs, dout, dq, dk, dv]() mutable { host::sdpa_bwd(g, q, k, v, probs, dout, dq, dk, dv); });
}

void token_meanpool_fwd(const Tensor& x, Tensor& y, const Stream& s) {
  constexpr const char* op = "token_meanpool_fwd";
  check_float(op, "x", x);
  GPPF_CHECK(x.ndim() == 3 && x.dim(1) > 0, op, ": x must be tokens [N, T, D] with T > 0, got ", x.desc());
  check_operand(op, "y", y, {x.dim(0), x.dim(2)}, x);
  if (x.numel() == 0) return;
  const Tensor x4 = x.reshape({x.dim(0), x.dim(1), 1, x.dim(2)});
  if (launch_on_cuda(x.device()))
    cuda::global_avgpool_fwd(x4, y, device_stream(s, x));
  else
    runtime::host_launch([x4, y]() mutable { host::global_avgpool_fwd(x4, y); });
}

void token_meanpool_bwd(const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s) {
  constexpr const char* op = "token_meanpool_bwd";
  check_float(op, "dx", dx);
  GPPF_CHECK(dx.ndim() == 3 && dx.dim(1) > 0, op, ": dx must be tokens [N, T, D] with T > 0, got ", dx.desc());
  check_operand(op, "dy", dy, {dx.dim(0), dx.dim(2)}, dx);
  if (dx.numel() == 0) return;
  Tensor dx4 = dx.reshape({dx.dim(0), dx.dim(1), 1, dx.dim(2)});
  if (launch_on_cuda(dx.device()))
    cuda::global_avgpool_bwd(dy, dx4, mode, device_stream(s, dx));
  else
    runtime::host_launch([dy, dx4, mode]() mutable { host::global_avgpool_bwd(dy, dx4, mode); });
}

}  // namespace gppf::kernels
