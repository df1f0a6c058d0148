#include "kernels/conv.hpp"

namespace gppf::kernels::cuda {
void conv2d_fwd(const Conv2dParams&, const Conv2dGeometry&, const Tensor&, const Tensor&, const Tensor&, Tensor&,
                const Stream&) {
  GPPF_THROW("conv2d_fwd on CUDA: this gppf was built without CUDA");
}
void conv2d_bwd_data(const Conv2dParams&, const Conv2dGeometry&, const Tensor&, const Tensor&, Tensor&, GradMode,
                     const Stream&) {
  GPPF_THROW("conv2d_bwd_data on CUDA: this gppf was built without CUDA");
}
void conv2d_bwd_filter(const Conv2dParams&, const Conv2dGeometry&, const Tensor&, const Tensor&, Tensor&, Tensor*,
                       GradMode, const Stream&) {
  GPPF_THROW("conv2d_bwd_filter on CUDA: this gppf was built without CUDA");
}
}  // namespace gppf::kernels::cuda
