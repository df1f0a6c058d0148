#pragma once
// The head layout ops of multi-head attention (gppf-vit's transformer blocks, with
// kernels/attention.hpp). The QKV projection gives tokens [N, T, 3D], laid out [N, T, 3, H, Dh] with
// D = H * Dh; sdpa_fwd wants q, k, v as heads [N, H, T, Dh] each; its output goes back to tokens
// [N, T, D] (laid out [N, T, H, Dh]) for the output projection. Each op is a permutation of values,
// so its backward is its inverse (and adjoint):
//   split_heads:     qkv [N, T, 3 H Dh] -> q, k, v [N, H, T, Dh]   backward: split_heads_bwd
//   merge_heads:     x [N, H, T, Dh]    -> y [N, T, H Dh]          backward: merge_heads_bwd
// Every output is written (overwritten), never accumulated: in a transformer block each has one
// consumer.
//
// Pure data movement: f32 or bf16 on both backends, every tensor of one call in one dtype and on one
// device, values copied bit for bit (NaN payloads and signed zeros too). Outputs must not overlap
// inputs or one another. Row-major tensors that are views (Tensor::narrow0) are fine; CUDA copies
// 16-, 8-, 4- or 2-byte words, the widest that the head rows and every pointer of the call allow.
//
// Launches per call (counted on every device, core/counters.hpp): 1, one kernel on CUDA that moves
// all three of q, k, v. Nothing is launched for an empty output.
#include <span>

#include "kernels/common.hpp"

namespace gppf::kernels {

// qkv [N, T, 3 * H * Dh] -> q, k, v [N, H, T, Dh] (each written); heads = H > 0.
void split_heads(const Tensor& qkv, int heads, Tensor& q, Tensor& k, Tensor& v, const Stream& s = Stream::host());
// Its adjoint: dq, dk, dv [N, H, T, Dh] -> dqkv [N, T, 3 * H * Dh] (written).
void split_heads_bwd(const Tensor& dq, const Tensor& dk, const Tensor& dv, Tensor& dqkv,
                     const Stream& s = Stream::host());
// x [N, H, T, Dh] -> y [N, T, H * Dh] (written); its adjoint is split_heads of one tensor:
// dy [N, T, H * Dh] -> dx [N, H, T, Dh] (written); heads = H > 0.
void merge_heads(const Tensor& x, Tensor& y, const Stream& s = Stream::host());
void merge_heads_bwd(const Tensor& dy, int heads, Tensor& dx, const Stream& s = Stream::host());

// Backends, called after the checks above with a non-empty problem. Tokens [n, t, parts, heads, dh]
// (row-major) and `parts` head tensors [n, heads, t, dh], parts 1 (merge) or 3 (q, k, v).
inline constexpr int kMaxHeadParts = 3;
struct HeadsShape {
  std::int64_t n = 0, t = 0, parts = 0, heads = 0, dh = 0;
};
namespace host {
void tokens_to_heads(const HeadsShape& g, const Tensor& tokens, std::span<Tensor* const> parts);
void heads_to_tokens(const HeadsShape& g, std::span<const Tensor* const> parts, Tensor& tokens);
}  // namespace host
namespace cuda {
void tokens_to_heads(const HeadsShape& g, const Tensor& tokens, std::span<Tensor* const> parts, const Stream& s);
void heads_to_tokens(const HeadsShape& g, std::span<const Tensor* const> parts, Tensor& tokens, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
