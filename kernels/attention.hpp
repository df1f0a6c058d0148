#pragma once
// The attention and MLP ops of gppf-vit's transformer blocks (layer norm is kernels/layernorm.hpp):
// GELU, softmax over the last dim, batched matrix multiply, scaled dot-product attention over heads,
// and mean pooling over tokens. Tensors are row-major; "tokens" are [N, T, D], attention heads
// [N, H, T, Dh]. Every tensor of one call lives on one device.
//
// Dtypes: GELU, softmax and token pooling take f32 or bf16 on both backends (math in f32). bmm and
// sdpa run on OpenBLAS on the host (f32 only) and on cuBLAS on CUDA (f32 or bf16 inputs, f32
// accumulation, TF32 only when kernels::allow_tf32()), as kernels/linear.hpp's gemm.
//
// Launches per call (counted on every device, core/counters.hpp): 1 for each op but sdpa_fwd (3: the
// scores GEMM, the softmax kernel, the output GEMM) and sdpa_bwd (5: four GEMMs and the softmax
// backward kernel). Nothing is launched for an empty output.
#include "kernels/common.hpp"

namespace gppf::kernels {

// ---- GELU, the exact form (PyTorch's default): y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))).
void gelu_fwd(const Tensor& x, Tensor& y, const Stream& s = Stream::host());
// dx = dy * (Phi(x) + x * phi(x)), phi the standard normal density; written or accumulated per mode.
void gelu_bwd(const Tensor& x, const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s = Stream::host());

// ---- Softmax over the last dim, numerically stable (the row max is subtracted before exp).
// x, y: [..., L], same shape and dtype; y may be x (in place).
void softmax_fwd(const Tensor& x, Tensor& y, const Stream& s = Stream::host());
// dx = y * (dy - sum(dy * y)) per row, y the forward output; dx overwritten and may be dy.
void softmax_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, const Stream& s = Stream::host());

// ---- Batched matrix multiply: C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b] for every b.
// A [..., M, K] ([..., K, M] with trans_a), B [..., K, N] ([..., N, K] with trans_b), C [..., M, N]:
// the same leading dims on all three (flattened into the batch; none is broadcast). beta = 0 ignores
// C's old content. Dtypes as gemm's: host f32; CUDA A and B f32 or bf16, C f32, or bf16 from bf16.
struct BmmParams {
  bool trans_a = false, trans_b = false;
  float alpha = 1.0f, beta = 0.0f;
};
void bmm(const BmmParams& p, const Tensor& a, const Tensor& b, Tensor& c, const Stream& s = Stream::host());

// ---- Scaled dot-product attention over heads, no mask:
//   probs = softmax(scale * q k^T) (over the keys), out = probs v,
// q [N, H, Tq, Dh], k [N, H, Tk, Dh], v [N, H, Tk, Dv], out [N, H, Tq, Dv], probs [N, H, Tq, Tk], all in
// q's dtype. Forward keeps probs for backward: N * H * Tq * Tk values per call (a ViT-B/16 block at
// 224 px, N = 64, H = 12, T = 197: 60 MB in bf16, 119 MB in f32, per block), the price of running
// attention as GEMMs + softmax. On CUDA forward also takes f32 scores from the stream's workspace when
// q is bf16, backward an f32 dP (and a bf16 dS) of the same count.
// The next step, where it applies (bf16 on CUDA, head dims a multiple of 8), is cuDNN's fused flash
// attention (the cudnn frontend's SDPA graph), which keeps only the row log-sum-exp [N, H, Tq].
struct SdpaParams {
  float scale = 0.0f;  // 0: 1 / sqrt(Dh)
};
float sdpa_scale(const SdpaParams& p, std::int64_t head_dim);
void sdpa_fwd(const SdpaParams& p, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& probs,
              const Stream& s = Stream::host());
// dq, dk, dv (shaped as q, k, v) overwritten, from probs of sdpa_fwd and dout (shaped as out).
void sdpa_bwd(const SdpaParams& p, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
              const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, const Stream& s = Stream::host());

// ---- Mean over tokens: x [N, T, D] -> y [N, D] (T > 0). Backward spreads dy / T over the tokens; dx
// written or accumulated per mode. The global average pooling of kernels/pool.hpp on [N, T, 1, D].
void token_meanpool_fwd(const Tensor& x, Tensor& y, const Stream& s = Stream::host());
void token_meanpool_bwd(const Tensor& dy, Tensor& dx, GradMode mode, const Stream& s = Stream::host());

// Backends, called after the checks above.
// One GEMM per batch item: op(A) [m, k], op(B) [k, n], C [m, n], items packed densely.
struct BmmShape {
  bool trans_a = false, trans_b = false;
  std::int64_t batch = 0, m = 0, n = 0, k = 0;
};
// Attention over batch = N * H heads.
struct SdpaShape {
  std::int64_t batch = 0, tq = 0, tk = 0, dh = 0, dv = 0;
  float scale = 1.0f;
};
namespace host {
void gelu_fwd(const Tensor& x, Tensor& y);
void gelu_bwd(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate);
void softmax_fwd(const Tensor& x, Tensor& y);
void softmax_bwd(const Tensor& y, const Tensor& dy, Tensor& dx);
void bmm(const BmmShape& g, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c);
void sdpa_fwd(const SdpaShape& g, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& probs);
void sdpa_bwd(const SdpaShape& g, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
              const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv);
}  // namespace host
namespace cuda {
void gelu_fwd(const Tensor& x, Tensor& y, const Stream& s);
void gelu_bwd(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate, const Stream& s);
void softmax_fwd(const Tensor& x, Tensor& y, const Stream& s);
void softmax_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, const Stream& s);
void bmm(const BmmShape& g, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c, const Stream& s);
void sdpa_fwd(const SdpaShape& g, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& probs,
              const Stream& s);
void sdpa_bwd(const SdpaShape& g, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
              const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
