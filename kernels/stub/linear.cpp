#include "kernels/linear.hpp"

namespace gppf::kernels::cuda {
void gemm(const GemmShape&, float, const Tensor&, const Tensor&, float, Tensor&, const Stream&) {
  GPPF_THROW("gemm on CUDA: this gppf was built without CUDA");
}
}  // namespace gppf::kernels::cuda
