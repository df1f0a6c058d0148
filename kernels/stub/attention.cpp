#include "kernels/attention.hpp"

namespace gppf::kernels::cuda {
namespace {
[[noreturn]] void no_cuda(const char* op) { GPPF_THROW(op, " on CUDA: this gppf was built without CUDA"); }
}  // namespace

void gelu_fwd(const Tensor&, Tensor&, const Stream&) { no_cuda("gelu_fwd"); }
void gelu_bwd(const Tensor&, const Tensor&, Tensor&, bool, const Stream&) { no_cuda("gelu_bwd"); }
void softmax_fwd(const Tensor&, Tensor&, const Stream&) { no_cuda("softmax_fwd"); }
void softmax_bwd(const Tensor&, const Tensor&, Tensor&, const Stream&) { no_cuda("softmax_bwd"); }
void bmm(const BmmShape&, float, const Tensor&, const Tensor&, float, Tensor&, const Stream&) { no_cuda("bmm"); }
void sdpa_fwd(const SdpaShape&, const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&, const Stream&) {
  no_cuda("sdpa_fwd");
}
void sdpa_bwd(const SdpaShape&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&,
              Tensor&, Tensor&, const Stream&) {
  no_cuda("sdpa_bwd");
}

}  // namespace gppf::kernels::cuda
