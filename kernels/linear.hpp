#pragma once
// Fully connected layers and a general GEMM, row-major. Host: OpenBLAS sgemm (f32). CUDA: cuBLAS
// (cublasGemmEx, f32 accumulation; TF32 only when kernels::allow_tf32()). On CUDA the two GEMM inputs
// share a dtype (f32 or bf16) and the output is f32, or bf16 when the inputs are.
#include "kernels/common.hpp"

namespace gppf::kernels {

// x [N, In], w [Out, In], bias [Out] or undefined, y [N, Out]: y = x w^T + bias. x and y may have
// more leading dims ([..., In] -> [..., Out]); they are flattened into N.
void linear_fwd(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, const Stream& s = Stream::host());
// dx = dy w, written or accumulated per mode.
void linear_bwd_data(const Tensor& dy, const Tensor& w, Tensor& dx, GradMode mode, const Stream& s = Stream::host());
// dw = dy^T x and *dbias = column sums of dy (when dbias is not null), written or accumulated per mode.
void linear_bwd_weight(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias, GradMode mode,
                       const Stream& s = Stream::host());
// C = alpha * op(A) op(B) + beta * C for 2-D row-major tensors (beta = 0 ignores C's old content).
void gemm(bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c,
          const Stream& s = Stream::host());

// Backends, called after the checks: shapes are consistent and m, n, k are op(A) [m, k], op(B) [k, n].
struct GemmShape {
  bool trans_a = false, trans_b = false;
  std::int64_t m = 0, n = 0, k = 0;
};
namespace host {
void gemm(const GemmShape& g, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c);
}
namespace cuda {
void gemm(const GemmShape& g, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c, const Stream& s);
}

}  // namespace gppf::kernels
