#include "kernels/resample.hpp"

namespace gppf::kernels::cuda {
void upsample_fwd(const UpsampleParams&, const Tensor&, Tensor&, const Stream&) {
  GPPF_THROW("upsample_fwd on CUDA: this gppf was built without CUDA");
}
void upsample_bwd(const UpsampleParams&, const Tensor&, Tensor&, bool, const Stream&) {
  GPPF_THROW("upsample_bwd on CUDA: this gppf was built without CUDA");
}
}  // namespace gppf::kernels::cuda
