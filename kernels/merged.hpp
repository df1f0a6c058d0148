#pragma once
// The pixel-wise passes of the merged lego block (src/nn/merged_legos.hpp), on NHWC f32 tensors seen
// as [pixels, C]. Host f32 so far: on CUDA every front-end throws "not implemented on CUDA yet".
#include <vector>

#include "kernels/common.hpp"

namespace gppf::kernels {

// out[p][c] = x[p][c] - mean[c].
void center_channels(const Tensor& x, const Tensor& mean, Tensor& out, const Stream& s = Stream::host());
// y[p][c] = max(y[p][c] + scale[c] * shortcut[p][c] + shift[c], 0), in place.
void add_affine_relu(Tensor& y, const Tensor& shortcut, const Tensor& scale, const Tensor& shift,
                     const Stream& s = Stream::host());
// da = dy where y > 0, else 0. Returns 2C sums: sum_p da[p][c], then sum_p da[p][c] * (z[p][c] -
// zmean[c]) (zeros when z is undefined); f32 over blocks of 64 pixels, f64 across blocks and
// threads, threads added in order (deterministic for a thread count).
std::vector<double> relu_bwd_channel_sums(const Tensor& y, const Tensor& dy, const Tensor& z, const Tensor& zmean,
                                          Tensor& da, const Stream& s = Stream::host());
// d[p][k] += h[k] - sum_k2 ac[p][k2] * g[k2][k], with g [K, K] and h [K].
void gram_correct(Tensor& d, const Tensor& ac, const Tensor& g, const Tensor& h, const Stream& s = Stream::host());
// out[p][c] = k1[c] * da[p][c] - k0[c] - k2[c] * (z[p][c] - zmean[c]) (batch norm's input gradient
// from its precomputed per-channel terms).
void bn_input_grad(const Tensor& da, const Tensor& z, const Tensor& zmean, const Tensor& k1, const Tensor& k0,
                   const Tensor& k2, Tensor& out, const Stream& s = Stream::host());

namespace host {
void center_channels(const Tensor& x, const Tensor& mean, Tensor& out);
void add_affine_relu(Tensor& y, const Tensor& shortcut, const Tensor& scale, const Tensor& shift);
std::vector<double> relu_bwd_channel_sums(const Tensor& y, const Tensor& dy, const Tensor& z, const Tensor& zmean,
                                          Tensor& da);
void gram_correct(Tensor& d, const Tensor& ac, const Tensor& g, const Tensor& h);
void bn_input_grad(const Tensor& da, const Tensor& z, const Tensor& zmean, const Tensor& k1, const Tensor& k0,
                   const Tensor& k2, Tensor& out);
}  // namespace host

}  // namespace gppf::kernels
