#pragma once
// Concatenation along the last (channel) dim of NHWC tensors, and its inverse. All other dims equal;
// one dtype (f32 on the host, f32 or bf16 on CUDA) and one device for all.
#include <vector>

#include "kernels/common.hpp"

namespace gppf::kernels {

// y [..., sum Ci] = [xs[0] | xs[1] | ...]
void concat_channels(const std::vector<Tensor>& xs, Tensor& y, const Stream& s = Stream::host());
// The inverse (also the backward of concat): xs[i] gets its slice of y, written or accumulated per mode.
void split_channels(const Tensor& y, std::vector<Tensor>& xs, GradMode mode, const Stream& s = Stream::host());

// Backends for one part: x [rows, x_cols] is columns [offset, offset + x_cols) of y [rows, y_cols].
struct ChannelSlice {
  std::int64_t rows = 0, x_cols = 0, y_cols = 0, offset = 0;
};
namespace host {
void concat_channels(const std::vector<Tensor>& xs, Tensor& y);
void split_channels(const Tensor& y, std::vector<Tensor>& xs, bool accumulate);
}  // namespace host
namespace cuda {
void concat_slice(const ChannelSlice& sl, const Tensor& x, Tensor& y, const Stream& s);
void split_slice(const ChannelSlice& sl, const Tensor& y, Tensor& x, bool accumulate, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
