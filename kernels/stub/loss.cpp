#include "kernels/loss.hpp"

namespace gppf::kernels::cuda {
namespace {
[[noreturn]] void no_cuda(const char* op) { GPPF_THROW(op, " on CUDA: this gppf was built without CUDA"); }
}  // namespace

void softmax_cross_entropy(const CrossEntropyParams&, const Tensor&, const Tensor&, Tensor&, GradMode, Tensor*,
                           const Stream&) {
  no_cuda("softmax_cross_entropy");
}
void check_label_errors(const Stream&, bool) { no_cuda("check_label_errors"); }
void centernet_focal_loss(const FocalParams&, const Tensor&, const Tensor&, Tensor&, GradMode, Tensor*, const Stream&) {
  no_cuda("centernet_focal_loss");
}
void sigmoid_focal_loss(const SigmoidFocalParams&, const Tensor&, const Tensor&, Tensor&, GradMode, Tensor*,
                        const Stream&) {
  no_cuda("sigmoid_focal_loss");
}
void smooth_l1_loss(const RegressionParams&, const Tensor&, const Tensor&, const Tensor&, Tensor&, GradMode, Tensor*,
                    const Stream&) {
  no_cuda("smooth_l1_loss");
}
}  // namespace gppf::kernels::cuda
