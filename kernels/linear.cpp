#include "kernels/linear.hpp"

#include "core/graph.hpp"
#include "kernels/elementwise.hpp"

namespace gppf::kernels {
namespace {

// Host: f32 throughout. CUDA: A and B share f32 or bf16; C is f32, or bf16 with bf16 inputs
// (the combinations cublasGemmEx runs with f32 accumulation).
void check_gemm_operands(const char* op, const Tensor& a, const Tensor& b, const Tensor& c) {
  GPPF_CHECK(a.defined() && b.defined() && c.defined(), op, ": undefined operand");
  check_same_device(op, a, b);
  check_same_device(op, a, c);
  if (a.device().is_host()) {
    check_dtype(op, "A", a, DType::F32);
    check_dtype(op, "B", b, DType::F32);
    check_dtype(op, "C", c, DType::F32);
    return;
  }
  GPPF_CHECK(a.dtype() == DType::F32 || a.dtype() == DType::BF16, op, ": inputs must be f32 or bf16 on CUDA, got ",
             a.desc());
  check_dtype(op, "B (same dtype as A)", b, a.dtype());
  GPPF_CHECK(c.dtype() == DType::F32 || (c.dtype() == DType::BF16 && a.dtype() == DType::BF16), op, ": output ",
             c.desc(), " cannot be computed from ", a.desc(), " (f32 output, or bf16 from bf16 inputs)");
}

void run_gemm(const GemmShape& g, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c,
              const Stream& s) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {  // op(A) op(B) is all zeros
    if (beta == 0.0f)
      fill(c, 0.0f, s);
    else
      axpby(0.0f, c, beta, c, s);
    return;
  }
  constexpr std::int64_t kMax = 2147483647;  // BLAS and cuBLAS take 32-bit sizes
  GPPF_CHECK(g.m <= kMax && g.n <= kMax && g.k <= kMax, "gemm: sizes m=", g.m, " n=", g.n, " k=", g.k,
             " exceed the 32-bit limit of BLAS; split the batch");
  if (launch_on_cuda(a.device()))
    cuda::gemm(g, alpha, a, b, beta, c, device_stream(s, a));
  else
    runtime::host_launch([g, alpha, a, b, beta, c]() mutable { host::gemm(g, alpha, a, b, beta, c); });
}

// [..., C] as [rows, C].
Tensor as_matrix(const Tensor& t) {
  std::int64_t rows = 1;
  for (int i = 0; i + 1 < t.ndim(); ++i) rows *= t.dim(i);
  return t.reshape({rows, t.dim(-1)});
}

Shape with_last(Shape shape, std::int64_t last) {
  shape.back() = last;
  return shape;
}

void check_matrix_input(const char* op, const char* what, const Tensor& t) {
  GPPF_CHECK(t.defined() && t.ndim() >= 2, op, ": ", what, " must have at least 2 dims, got ",
             t.defined() ? t.desc() : std::string("undefined"));
}

}  // namespace

void gemm(bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c,
          const Stream& s) {
  check_gemm_operands("gemm", a, b, c);
  GPPF_CHECK(a.ndim() == 2 && b.ndim() == 2, "gemm: A and B must be 2-D, got ", a.desc(), " and ", b.desc());
  GemmShape g{trans_a, trans_b, trans_a ? a.dim(1) : a.dim(0), trans_b ? b.dim(0) : b.dim(1),
              trans_a ? a.dim(0) : a.dim(1)};
  const std::int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  GPPF_CHECK(kb == g.k, "gemm: inner dimensions differ: op(A) of ", a.desc(), (trans_a ? " (transposed)" : ""),
             " and op(B) of ", b.desc(), (trans_b ? " (transposed)" : ""));
  check_shape("gemm", "C", c, {g.m, g.n});
  run_gemm(g, alpha, a, b, beta, c, s);
}

void linear_fwd(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, const Stream& s) {
  check_matrix_input("linear_fwd", "x", x);
  check_gemm_operands("linear_fwd", x, w, y);
  const std::int64_t in = x.dim(-1);
  GPPF_CHECK(w.ndim() == 2 && w.dim(1) == in, "linear_fwd: w expected [Out, ", in, "] for x ", x.desc(), ", got ",
             w.desc());
  const std::int64_t out = w.dim(0);
  check_shape("linear_fwd", "y", y, with_last(x.shape(), out));
  const Tensor x2 = as_matrix(x);
  Tensor y2 = as_matrix(y);
  float beta = 0.0f;
  if (bias.defined()) {
    check_shape("linear_fwd", "bias", bias, {out});
    check_same_device("linear_fwd", bias, y);
    if (y.device().is_host()) {
      check_dtype("linear_fwd", "bias", bias, DType::F32);
      runtime::host_launch([bias, y2]() mutable { host::broadcast_rows(bias, y2); });
    } else {
      cuda::broadcast_rows(bias, y2, s);
    }
    beta = 1.0f;
  }
  run_gemm({false, true, x2.dim(0), out, in}, 1.0f, x2, w, beta, y2, s);
}

void linear_bwd_data(const Tensor& dy, const Tensor& w, Tensor& dx, GradMode mode, const Stream& s) {
  check_matrix_input("linear_bwd_data", "dy", dy);
  check_gemm_operands("linear_bwd_data", dy, w, dx);
  const std::int64_t out = dy.dim(-1);
  GPPF_CHECK(w.ndim() == 2 && w.dim(0) == out, "linear_bwd_data: w expected [", out, ", In] for dy ", dy.desc(),
             ", got ", w.desc());
  check_shape("linear_bwd_data", "dx", dx, with_last(dy.shape(), w.dim(1)));
  const Tensor dy2 = as_matrix(dy);
  Tensor dx2 = as_matrix(dx);
  run_gemm({false, false, dy2.dim(0), w.dim(1), out}, 1.0f, dy2, w, mode == GradMode::Accumulate ? 1.0f : 0.0f, dx2, s);
}

void linear_bwd_weight(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias, GradMode mode, const Stream& s) {
  check_matrix_input("linear_bwd_weight", "x", x);
  check_matrix_input("linear_bwd_weight", "dy", dy);
  check_gemm_operands("linear_bwd_weight", dy, x, dw);
  const std::int64_t in = x.dim(-1), out = dy.dim(-1);
  check_shape("linear_bwd_weight", "dy", dy, with_last(x.shape(), out));
  check_shape("linear_bwd_weight", "dw", dw, {out, in});
  const Tensor x2 = as_matrix(x), dy2 = as_matrix(dy);
  run_gemm({true, false, out, in, x2.dim(0)}, 1.0f, dy2, x2, mode == GradMode::Accumulate ? 1.0f : 0.0f, dw, s);
  if (dbias) reduce_rows(dy2, *dbias, mode, s);
}

}  // namespace gppf::kernels
