#include "kernels/segments.hpp"

namespace gppf::kernels::cuda {
namespace {
[[noreturn]] void no_cuda(const char* op) { GPPF_THROW(op, " on CUDA: this gppf was built without CUDA"); }
}  // namespace

std::int64_t segment_copy(const Tensor&, Tensor&, const std::vector<SegmentCopy>&, bool, const Stream&) {
  no_cuda("segment_copy");
}
std::int64_t segment_dot(const Tensor&, const Tensor&, const std::vector<SegmentDot>&, Tensor&, const Stream&) {
  no_cuda("segment_dot");
}
std::int64_t batchnorm_fwd_train_segments(const BatchNormParams&, const Tensor&, const Tensor&, const Tensor&,
                                          const std::vector<BatchNormSegment>&, Tensor&, Tensor&, Tensor&,
                                          const Stream&) {
  no_cuda("batchnorm_fwd_train_segments");
}
std::int64_t batchnorm_bwd_segments(const BatchNormParams&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const std::vector<BatchNormSegment>&, const Tensor&, const Tensor&, Tensor&,
                                    Tensor&, Tensor&, GradMode, const Stream&) {
  no_cuda("batchnorm_bwd_segments");
}
std::int64_t batchnorm_add_relu_segments(const Tensor&, const Tensor&, const Tensor&, const std::vector<NormPart>&,
                                         const Tensor&, Tensor&, const Stream&) {
  no_cuda("batchnorm_add_relu_segments");
}
std::int64_t segment_dot_bn(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const std::vector<NormPart>&,
                            Tensor&, const Stream&) {
  no_cuda("segment_dot_bn");
}

}  // namespace gppf::kernels::cuda
