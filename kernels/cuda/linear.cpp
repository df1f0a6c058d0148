#include "kernels/linear.hpp"

#include "kernels/cuda/context.hpp"

namespace gppf::kernels::cuda {

void gemm(const GemmShape& g, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c, const Stream& s) {
  Context& ctx = context(s);
  const cudaDataType_t in_type = a.dtype() == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  const cudaDataType_t out_type = c.dtype() == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  // f32 accumulation always; TF32 tensor cores for f32 inputs only when the config asks for them.
  const cublasComputeType_t compute =
      a.dtype() == DType::F32 && allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets the operands swapped,
  // and each row-major buffer read column-major is already its transpose.
  GPPF_CUBLAS_CHECK(cublasGemmEx(ctx.cublas, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b.data(), in_type,
                                 g.trans_b ? k : n, a.data(), in_type, g.trans_a ? m : k, &beta, c.data(), out_type, n,
                                 compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace gppf::kernels::cuda
