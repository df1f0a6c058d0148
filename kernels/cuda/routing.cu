#include "kernels/cuda/parallel_for.cuh"
#include "kernels/routing.hpp"

namespace gppf::kernels::cuda {
void router_grad(const RouterGradFunctor& f, std::int64_t legos, const Stream& s) {
  parallel_for_cuda(legos, f, gppf::cuda::native(s));
}
}  // namespace gppf::kernels::cuda
