#include "kernels/cast.hpp"

namespace gppf::kernels::cuda {
void cast(const Tensor&, Tensor&, const Stream&) { GPPF_THROW("cast on CUDA: this gppf was built without CUDA"); }
}  // namespace gppf::kernels::cuda
