#include "kernels/elementwise.hpp"

namespace gppf::kernels::cuda {
namespace {
[[noreturn]] void no_cuda(const char* op) { GPPF_THROW(op, " on CUDA: this gppf was built without CUDA"); }
}  // namespace

void relu_fwd(const Tensor&, Tensor&, const Stream&) { no_cuda("relu_fwd"); }
void relu_bwd(const Tensor&, const Tensor&, Tensor&, bool, const Stream&) { no_cuda("relu_bwd"); }
void add(const Tensor&, const Tensor&, Tensor&, bool, const Stream&) { no_cuda("add"); }
void axpby(float, const Tensor&, float, Tensor&, const Stream&) { no_cuda("axpby"); }
void axpby_scalar(const Tensor&, const Tensor&, float, Tensor&, const Stream&) { no_cuda("axpby_scalar"); }
void fill(Tensor&, float, const Stream&) { no_cuda("fill"); }
void dot(const Tensor&, const Tensor&, Tensor&, bool, const Stream&) { no_cuda("dot"); }
void reduce_rows(const Tensor&, Tensor&, bool, const Stream&) { no_cuda("reduce_rows"); }
void broadcast_rows(const Tensor&, Tensor&, const Stream&) { no_cuda("broadcast_rows"); }

}  // namespace gppf::kernels::cuda
