#include "kernels/pool.hpp"

namespace gppf::kernels::cuda {
namespace {
[[noreturn]] void no_cuda(const char* op) { GPPF_THROW(op, " on CUDA: this gppf was built without CUDA"); }
}  // namespace

void maxpool2d_fwd(const Pool2dParams&, const Tensor&, Tensor&, const Stream&) { no_cuda("maxpool2d_fwd"); }
void maxpool2d_bwd(const Pool2dParams&, const Tensor&, const Tensor&, const Tensor&, Tensor&, const Stream&) {
  no_cuda("maxpool2d_bwd");
}
void avgpool2d_fwd(const Pool2dParams&, const Tensor&, Tensor&, const Stream&) { no_cuda("avgpool2d_fwd"); }
void avgpool2d_bwd(const Pool2dParams&, const Tensor&, Tensor&, const Stream&) { no_cuda("avgpool2d_bwd"); }
void global_avgpool_fwd(const Tensor&, Tensor&, const Stream&) { no_cuda("global_avgpool_fwd"); }
void global_avgpool_bwd(const Tensor&, Tensor&, GradMode, const Stream&) { no_cuda("global_avgpool_bwd"); }

}  // namespace gppf::kernels::cuda
