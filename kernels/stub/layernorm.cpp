#include "kernels/layernorm.hpp"

namespace gppf::kernels::cuda {
namespace {
[[noreturn]] void no_cuda(const char* op) { GPPF_THROW(op, " on CUDA: this gppf was built without CUDA"); }
}  // namespace

void layernorm_fwd(const LayerNormParams&, const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&, Tensor&,
                   const Stream&) {
  no_cuda("layernorm_fwd");
}
void layernorm_bwd(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&, Tensor&,
                   GradMode, const Stream&) {
  no_cuda("layernorm_bwd");
}

}  // namespace gppf::kernels::cuda
