#include "kernels/concat.hpp"

namespace gppf::kernels::cuda {
void concat_slice(const ChannelSlice&, const Tensor&, Tensor&, const Stream&) {
  GPPF_THROW("concat_channels on CUDA: this gppf was built without CUDA");
}
void split_slice(const ChannelSlice&, const Tensor&, Tensor&, bool, const Stream&) {
  GPPF_THROW("split_channels on CUDA: this gppf was built without CUDA");
}
}  // namespace gppf::kernels::cuda
