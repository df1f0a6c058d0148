#include "kernels/routing.hpp"

namespace gppf::kernels::cuda {
void router_grad(const RouterGradFunctor&, std::int64_t, const Stream&) {
  GPPF_THROW("router_grad on CUDA: this gppf was built without CUDA");
}
}  // namespace gppf::kernels::cuda
