#include "kernels/grouped_gemm.hpp"

#include "kernels/elementwise.hpp"

namespace gppf::kernels::host {

// What kernels::gemm does on each problem, bit for bit, without counting a launch per problem.
void grouped_gemm(float alpha, const std::vector<GroupedGemmItem>& items) {
  for (const GroupedGemmItem& it : items) {
    if (it.g.k > 0)
      gemm(it.g, alpha, *it.a, *it.b, it.beta, *it.c);
    else if (it.beta == 0.0f)  // op(A) op(B) is all zeros
      fill(*it.c, 0.0f);
    else
      axpby(0.0f, *it.c, it.beta, *it.c);
  }
}

}  // namespace gppf::kernels::host
