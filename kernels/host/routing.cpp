#include "kernels/routing.hpp"

namespace gppf::kernels::host {
void router_grad(const RouterGradFunctor& f, std::int64_t legos) {
  for (std::int64_t i = 0; i < legos; ++i) f(i);
}
}  // namespace gppf::kernels::host
