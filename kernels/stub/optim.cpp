#include "kernels/optim.hpp"

namespace gppf::kernels::cuda {
namespace {
[[noreturn]] void no_cuda(const char* op) { GPPF_THROW(op, " on CUDA: this gppf was built without CUDA"); }
using Ns = std::span<const std::int64_t>;
using Outs = std::span<double* const>;
}  // namespace

void sgd_update(std::span<const SgdFunctor>, Ns, const Stream&) { no_cuda("sgd_update"); }
void adamw_update(std::span<const AdamWFunctor>, Ns, const Stream&) { no_cuda("adamw_update"); }
void lars_update(std::span<const LarsFunctor>, Ns, const Stream&) { no_cuda("lars_update"); }
void lamb_moments(std::span<const LambMomentsFunctor>, Ns, Outs, const Stream&) { no_cuda("lamb_moments"); }
void lamb_apply(std::span<const LambApplyFunctor>, Ns, const Stream&) { no_cuda("lamb_apply"); }
void sum_squares(std::span<const SumSquaresFunctor>, Ns, Outs, const Stream&) { no_cuda("sum_squares"); }
void scale_(const ScaleFunctor&, std::int64_t, const Stream&) { no_cuda("scale_"); }
void copy_tensors(std::span<const CopyFunctor>, std::span<const std::int64_t>, const Stream&) {
  no_cuda("copy_tensors");
}

}  // namespace gppf::kernels::cuda
