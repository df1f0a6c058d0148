#pragma once
// Several independent GEMMs of different sizes in one launch (the task-batched lego layer's 1x1
// convolutions, src/nn/lego_strategy_batched.cpp: one call per stage instead of one per lego).
// Row-major, as kernels::gemm; each problem gives exactly what kernels::gemm gives on it (the host
// bit for bit).
//
// Launches (core/counters.hpp, counted the same on every device, as CUDA launches them). Problems
// with m or n of 0 have nothing to do and are dropped first; the rest are "live".
//  - Live problems whose C has A's dtype (f32 -> f32, bf16 -> bf16; every problem on the host): per
//    pack of kMaxGroupedProblems, 2 launches: a tiny kernel that writes the pack's A, B and C pointers
//    (passed in its parameters, so no host staging buffer has to outlive the call) into the stream's
//    workspace, and one cublasGemmGroupedBatchedEx with one group per problem (each its own m, n, k,
//    beta). k = 0 runs as k = 1 with alpha 0 on zeroed operands that the same kernel writes.
//  - Live problems with bf16 A/B and an f32 C (f32 parameter gradients of bf16 activations), which
//    cublasGemmGroupedBatchedEx does not take: 1 launch each (cublasGemmEx; a fill or axpby for k = 0).
// Nothing is launched when no problem is live.
#include <vector>

#include "kernels/common.hpp"
#include "kernels/linear.hpp"

namespace gppf::kernels {

// Live problems of the grouped cuBLAS call per pack (their pointers ride in a kernel's parameters,
// within the 4 KiB that every architecture takes).
inline constexpr int kMaxGroupedProblems = 128;

// One problem: C = alpha * op(A) op(B) + beta * C, 2-D row-major tensors (views such as narrow0 are
// fine: tensors are contiguous).
struct GemmProblem {
  const Tensor* a = nullptr;
  const Tensor* b = nullptr;
  Tensor* c = nullptr;
  float beta = 0.0f;  // per problem (e.g. each lego's gradient mode: 0 overwrite, 1 accumulate)
};

// All problems share trans_a, trans_b and alpha; their sizes may differ (m, n or k of 0 too; k = 0:
// C = beta * C). beta = 0 ignores C's old content, even NaN. Host: f32 throughout. CUDA: A and B of
// every problem share one dtype (f32 or bf16); each C is f32 or that dtype. All on one device. No C may
// share memory with another operand of the call (the problems run concurrently on CUDA).
void grouped_gemm(bool trans_a, bool trans_b, float alpha, const std::vector<GemmProblem>& problems,
                  const Stream& s = Stream::host());

// Backends, called after the checks with the live problems (m, n > 0).
struct GroupedGemmItem {
  GemmShape g;  // trans_a, trans_b as the call's
  const Tensor* a = nullptr;
  const Tensor* b = nullptr;
  Tensor* c = nullptr;
  float beta = 0.0f;
};
namespace host {
void grouped_gemm(float alpha, const std::vector<GroupedGemmItem>& items);
}
namespace cuda {
// Returns the launches made.
std::int64_t grouped_gemm(float alpha, const std::vector<GroupedGemmItem>& items, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
