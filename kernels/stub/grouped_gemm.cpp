#include "kernels/grouped_gemm.hpp"

namespace gppf::kernels::cuda {
std::int64_t grouped_gemm(float, const std::vector<GroupedGemmItem>&, const Stream&) {
  GPPF_THROW("grouped_gemm on CUDA: this gppf was built without CUDA");
}
}  // namespace gppf::kernels::cuda
