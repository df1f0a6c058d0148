#pragma once
// A convolution of images whose filters always have 3 input channels (the ResNet stem, the ViT patch
// embedding). A 1-channel (grey) image is treated as the same grey value on all three channels:
// conv(replicate(x), W) == conv(x, sum_c W_c), so it runs with the channel-summed kernel (a third of
// the cost) and its filter gradient is the same for the three channels. Colour and grey tasks share
// one set of filters (docs/ARCHITECTURE.md, "Grey images").
#include <vector>

#include "src/nn/layers.hpp"

namespace gppf::nn {

class ColourConv final : public Module {
 public:
  // Filters [out_channels, kernel, kernel, 3], He-normal from rng; no bias.
  ColourConv(std::string name, int out_channels, int kernel, int stride, int padding, std::mt19937_64& rng);
  // x [N, H, W, 1] or [N, H, W, 3].
  Tensor forward(const RunState& rs, const Tensor& x);
  // The filter gradient of the last training forward (the input is an image: no input gradient).
  void backward(const RunState& rs, const Tensor& dy);
  void collect_parameters(std::vector<Parameter*>& out) override;
  Shape output_shape(const Shape& x) const;
  std::int64_t macs(const Shape& x) const;
  Parameter& weight() { return m_weight; }

 private:
  std::string m_name;
  kernels::Conv2dParams m_params;
  Parameter m_weight;  // [C, k, k, 3]
  Tensor m_x, m_w_used;
  std::vector<Tensor> m_ones;  // three ones per dtype and device (see ones())
  // Summing or repeating the input channels is a GEMM with these, on the tensors' device (a host
  // round trip would be two syncs per grey pass on a GPU).
  const Tensor& ones(DType dtype, Device device, const Stream& s);
};

}  // namespace gppf::nn
