#include "kernels/heads.hpp"

namespace gppf::kernels::cuda {
void tokens_to_heads(const HeadsShape&, const Tensor&, std::span<Tensor* const>, const Stream&) {
  GPPF_THROW("split_heads / merge_heads_bwd on CUDA: this gppf was built without CUDA");
}
void heads_to_tokens(const HeadsShape&, std::span<const Tensor* const>, Tensor&, const Stream&) {
  GPPF_THROW("merge_heads / split_heads_bwd on CUDA: this gppf was built without CUDA");
}
}  // namespace gppf::kernels::cuda
