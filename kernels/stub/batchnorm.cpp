#include "kernels/batchnorm.hpp"

namespace gppf::kernels::cuda {
namespace {
[[noreturn]] void no_cuda(const char* op) { GPPF_THROW(op, " on CUDA: this gppf was built without CUDA"); }
}  // namespace

void batchnorm_fwd_train(const BatchNormParams&, const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&, Tensor&,
                         Tensor&, Tensor&, const Stream&) {
  no_cuda("batchnorm_fwd_train");
}
void batchnorm_fwd_infer(const BatchNormParams&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                         const Tensor&, Tensor&, const Stream&) {
  no_cuda("batchnorm_fwd_infer");
}
void batchnorm_bwd(const BatchNormParams&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                   const Tensor&, Tensor&, Tensor&, Tensor&, GradMode, const Stream&) {
  no_cuda("batchnorm_bwd");
}

std::vector<double> batchnorm_channel_sums(bool, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                           const Tensor&, const Stream&) {
  no_cuda("batchnorm_channel_sums");
}
void batchnorm_bwd_data(bool, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        const Tensor&, Tensor&, const Stream&) {
  no_cuda("batchnorm_bwd_data");
}

}  // namespace gppf::kernels::cuda
