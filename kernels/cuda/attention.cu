// CUDA GELU and softmax (the functors the host runs too: a thread per element, a warp per row),
// batched GEMMs on cuBLAS (cublasGemmStridedBatchedEx: one call per bmm, f32 accumulation), and
// attention as their composite on the caller's stream:
//   forward:  S = scale q k^T (f32), P = softmax(S), out = P v                    (3 launches)
//   backward: dv = P^T dout, dP = dout v^T (f32), dS = P * (dP - rowsum(dP * P)),
//             dq = scale dS k, dk = scale dS^T q                                  (5 launches)
// With f32 inputs S is computed in probs itself and dS overwrites dP; with bf16 inputs S and dP come
// from the stream's workspace in f32 (bf16 scores would cost the softmax most of its precision) and
// dS is stored in bf16 next to dP for the bf16 GEMMs. cuDNN's fused attention is the next step where
// it applies (kernels/attention.hpp).
#include <type_traits>

#include "kernels/attention.hpp"
#include "kernels/cuda/context.hpp"
#include "kernels/cuda/parallel_for.cuh"
#include "kernels/cuda/rows.cuh"
#include "kernels/functors/attention.hpp"

namespace gppf::kernels::cuda {
namespace {

cudaDataType_t cuda_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// Row-major C[i] = alpha op(A[i]) op(B[i]) + beta C[i] for i < g.batch, items packed densely. As in
// kernels/cuda/linear.cpp, cuBLAS gets the operands swapped: a row-major buffer read column-major is
// its transpose. TF32 only for f32 inputs and only when the config asks for it.
void strided_gemm(const Stream& s, const BmmShape& g, float alpha, const void* a, const void* b, DType in, float beta,
                  void* c, DType out) {
  Context& ctx = context(s);
  const cudaDataType_t in_type = cuda_type(in), out_type = cuda_type(out);
  const cublasComputeType_t compute =
      in == DType::F32 && allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  GPPF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      ctx.cublas, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b,
      in_type, g.trans_b ? k : n, g.k * g.n, a, in_type, g.trans_a ? m : k, g.m * g.k, &beta, c, out_type, n, g.m * g.n,
      static_cast<int>(g.batch), compute, CUBLAS_GEMM_DEFAULT));
}

// Bytes rounded up so that the next workspace region starts 256-byte aligned (cuBLAS's fast paths).
std::size_t aligned(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

template <class T>
void sdpa_fwd_t(const SdpaShape& g, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& probs,
                const Stream& s) {
  const std::int64_t rows = g.batch * g.tq;
  const DType dt = q.dtype();
  T* p = static_cast<T*>(probs.data());
  float* scores = nullptr;
  if constexpr (std::is_same_v<T, float>)
    scores = p;
  else
    scores = static_cast<float*>(workspace(s, sizeof(float) * static_cast<std::size_t>(rows * g.tk)));
  strided_gemm(s, {false, true, g.batch, g.tq, g.tk, g.dh}, g.scale, q.data(), k.data(), dt, 0.0f, scores, DType::F32);
  for_each_row_cuda(rows, SoftmaxFwdRow<float, T, WarpLanes>{scores, p, g.tk}, gppf::cuda::native(s));
  strided_gemm(s, {false, false, g.batch, g.tq, g.dv, g.tk}, 1.0f, p, v.data(), dt, 0.0f, out.data(), dt);
}

template <class T>
void sdpa_bwd_t(const SdpaShape& g, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
                const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, const Stream& s) {
  const std::int64_t rows = g.batch * g.tq;
  const DType dt = q.dtype();
  const auto count = static_cast<std::size_t>(rows * g.tk);
  const bool f32 = std::is_same_v<T, float>;
  const std::size_t dp_bytes = aligned(sizeof(float) * count);
  auto* ws = static_cast<unsigned char*>(workspace(s, dp_bytes + (f32 ? 0 : sizeof(T) * count)));
  auto* dp = reinterpret_cast<float*>(ws);
  T* ds = f32 ? reinterpret_cast<T*>(ws) : reinterpret_cast<T*>(ws + dp_bytes);
  const T* p = static_cast<const T*>(probs.data());
  strided_gemm(s, {true, false, g.batch, g.tk, g.dv, g.tq}, 1.0f, p, dout.data(), dt, 0.0f, dv.data(), dt);
  strided_gemm(s, {false, true, g.batch, g.tq, g.tk, g.dv}, 1.0f, dout.data(), v.data(), dt, 0.0f, dp, DType::F32);
  for_each_row_cuda(rows, SoftmaxBwdRow<T, float, T, WarpLanes>{p, dp, ds, g.tk}, gppf::cuda::native(s));
  strided_gemm(s, {false, false, g.batch, g.tq, g.dh, g.tk}, g.scale, ds, k.data(), dt, 0.0f, dq.data(), dt);
  strided_gemm(s, {true, false, g.batch, g.tk, g.dh, g.tq}, g.scale, ds, q.data(), dt, 0.0f, dk.data(), dt);
}

}  // namespace

void gelu_fwd(const Tensor& x, Tensor& y, const Stream& s) {
  dispatch_float("gelu_fwd", x, [&](auto tag) {
    using T = decltype(tag);
    parallel_for_cuda(x.numel(), GeluFwdFunctor<T>{data_ptr<const T>(x), data_ptr<T>(y)}, gppf::cuda::native(s));
  });
}

void gelu_bwd(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate, const Stream& s) {
  dispatch_float("gelu_bwd", x, [&](auto tag) {
    using T = decltype(tag);
    const T* xs = data_ptr<const T>(x);
    const T* dys = data_ptr<const T>(dy);
    T* dxs = data_ptr<T>(dx);
    if (accumulate)
      parallel_for_cuda(x.numel(), GeluBwdFunctor<T, true>{xs, dys, dxs}, gppf::cuda::native(s));
    else
      parallel_for_cuda(x.numel(), GeluBwdFunctor<T, false>{xs, dys, dxs}, gppf::cuda::native(s));
  });
}

void softmax_fwd(const Tensor& x, Tensor& y, const Stream& s) {
  dispatch_float("softmax_fwd", x, [&](auto tag) {
    using T = decltype(tag);
    const std::int64_t cols = x.dim(-1);
    for_each_row_cuda(x.numel() / cols, SoftmaxFwdRow<T, T, WarpLanes>{data_ptr<const T>(x), data_ptr<T>(y), cols},
                      gppf::cuda::native(s));
  });
}

void softmax_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, const Stream& s) {
  dispatch_float("softmax_bwd", y, [&](auto tag) {
    using T = decltype(tag);
    const std::int64_t cols = y.dim(-1);
    for_each_row_cuda(
        y.numel() / cols,
        SoftmaxBwdRow<T, T, T, WarpLanes>{data_ptr<const T>(y), data_ptr<const T>(dy), data_ptr<T>(dx), cols},
        gppf::cuda::native(s));
  });
}

void bmm(const BmmShape& g, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c, const Stream& s) {
  strided_gemm(s, g, alpha, a.data(), b.data(), a.dtype(), beta, c.data(), c.dtype());
}

void sdpa_fwd(const SdpaShape& g, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& probs,
              const Stream& s) {
  if (q.dtype() == DType::BF16)
    sdpa_fwd_t<bf16>(g, q, k, v, out, probs, s);
  else
    sdpa_fwd_t<float>(g, q, k, v, out, probs, s);
}

void sdpa_bwd(const SdpaShape& g, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
              const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, const Stream& s) {
  if (q.dtype() == DType::BF16)
    sdpa_bwd_t<bf16>(g, q, k, v, probs, dout, dq, dk, dv, s);
  else
    sdpa_bwd_t<float>(g, q, k, v, probs, dout, dq, dk, dv, s);
}

}  // namespace gppf::kernels::cuda
