// cuBLAS grouped GEMM: one group (of one problem) per problem, so each has its own m, n, k and beta.
// cublasGemmGroupedBatchedEx wants the A, B and C pointers in device memory: a tiny kernel writes them
// from its by-value parameters into the stream's workspace, so nothing on the host has to outlive the
// call (a pinned staging buffer would have to stay untouched until the copy ran). The sizes, ld's,
// alphas and betas are host arrays that cuBLAS reads before it returns (CUBLAS_POINTER_MODE_HOST, the
// handle's default).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cuda/context.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/grouped_gemm.hpp"

namespace gppf::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMaxBlocks = 132 * 32;
constexpr std::size_t kAlign = 256;

// One pack's pointers: ptrs[role * kMaxGroupedProblems + j] for problem j and role 0 (cuBLAS's A: our
// B), 1 (cuBLAS's B: our A), 2 (C), written to dst[role * count + j]; and zero_words zeroed words at
// zeros, the operands of the k = 0 problems.
struct PointerPack {
  void* ptrs[3 * kMaxGroupedProblems] = {};
  void** dst = nullptr;
  std::uint32_t* zeros = nullptr;
  std::int64_t zero_words = 0;
  int count = 0;
};
static_assert(sizeof(PointerPack) <= 4000, "kernel parameters are limited to 4 KiB before sm_70/CUDA 12.1");

__global__ void write_pointers_kernel(const __grid_constant__ PointerPack p) {
  const std::int64_t pointers = 3 * static_cast<std::int64_t>(p.count);
  const std::int64_t n = pointers > p.zero_words ? pointers : p.zero_words;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    if (i < pointers) p.dst[i] = p.ptrs[(i / p.count) * kMaxGroupedProblems + i % p.count];
    if (i < p.zero_words) p.zeros[i] = 0u;
  }
}

cudaDataType_t cuda_type(DType dt) { return dt == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// items: 1..kMaxGroupedProblems problems whose C has the inputs' dtype. Two launches.
void run_pack(float alpha, const GroupedGemmItem* items, int count, const Stream& s) {
  Context& ctx = context(s);
  const DType in = items[0].a->dtype();
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, as in linear.cpp: cuBLAS gets B
  // as its first operand and A as its second, sizes (n, m, k).
  std::vector<cublasOperation_t> op_first(count), op_second(count);
  std::vector<int> m(count), n(count), k(count), ld_first(count), ld_second(count), ldc(count), group_size(count, 1);
  std::vector<float> alphas(count), betas(count);
  std::int64_t zero_elems = 0;
  for (int j = 0; j < count; ++j) {
    const GemmShape& g = items[j].g;
    const int gm = static_cast<int>(g.m), gn = static_cast<int>(g.n), gk = static_cast<int>(g.k);
    m[j] = gn;
    n[j] = gm;
    ldc[j] = gn;
    betas[j] = items[j].beta;
    if (gk > 0) {
      op_first[j] = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
      op_second[j] = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
      k[j] = gk;
      ld_first[j] = g.trans_b ? gk : gn;
      ld_second[j] = g.trans_a ? gm : gk;
      alphas[j] = alpha;
    } else {
      // C = beta * C as an ordinary GEMM of k = 1 on zeros (first [n, 1], second [1, m]) with alpha 0,
      // rather than trusting every grouped kernel with k = 0.
      op_first[j] = op_second[j] = CUBLAS_OP_N;
      k[j] = 1;
      ld_first[j] = gn;
      ld_second[j] = 1;
      alphas[j] = 0.0f;
      zero_elems = std::max<std::int64_t>(zero_elems, std::max(g.m, g.n));
    }
  }

  const std::size_t pointer_bytes =
      (3 * sizeof(void*) * static_cast<std::size_t>(count) + kAlign - 1) / kAlign * kAlign;
  const auto zero_words = static_cast<std::int64_t>((static_cast<std::size_t>(zero_elems) * dtype_size(in) + 3) / 4);
  auto* ws = static_cast<char*>(workspace(s, pointer_bytes + static_cast<std::size_t>(zero_words) * 4));
  PointerPack p;
  p.count = count;
  p.dst = reinterpret_cast<void**>(ws);
  p.zeros = reinterpret_cast<std::uint32_t*>(ws + pointer_bytes);
  p.zero_words = zero_words;
  for (int j = 0; j < count; ++j) {
    const GroupedGemmItem& it = items[j];
    const bool zero = it.g.k == 0;
    p.ptrs[j] = zero ? p.zeros : it.b->data();
    p.ptrs[kMaxGroupedProblems + j] = zero ? p.zeros : it.a->data();
    p.ptrs[2 * kMaxGroupedProblems + j] = it.c->data();
  }
  const std::int64_t threads = std::max<std::int64_t>(3 * static_cast<std::int64_t>(count), zero_words);
  const auto blocks =
      static_cast<unsigned>(std::clamp<std::int64_t>((threads + kThreads - 1) / kThreads, 1, kMaxBlocks));
  write_pointers_kernel<<<blocks, kThreads, 0, ctx.stream>>>(p);
  GPPF_CUDA_CHECK(cudaGetLastError());

  // f32 accumulation always; TF32 tensor cores for f32 inputs only when the config asks for them.
  const cublasComputeType_t compute =
      in == DType::F32 && allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  void** dst = p.dst;
  GPPF_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(
      ctx.cublas, op_first.data(), op_second.data(), m.data(), n.data(), k.data(), alphas.data(), dst, cuda_type(in),
      ld_first.data(), dst + count, cuda_type(in), ld_second.data(), betas.data(), dst + 2 * count, cuda_type(in),
      ldc.data(), count, group_size.data(), compute));
}

}  // namespace

std::int64_t grouped_gemm(float alpha, const std::vector<GroupedGemmItem>& items, const Stream& s) {
  const DType in = items.front().a->dtype();
  std::vector<GroupedGemmItem> grouped;
  std::int64_t launches = 0;
  for (const GroupedGemmItem& it : items) {
    if (it.c->dtype() == in) {
      grouped.push_back(it);
      continue;
    }
    // bf16 inputs into an f32 C: not a type combination of cublasGemmGroupedBatchedEx (32F compute
    // takes bf16 -> bf16 and f32 -> f32 only), so one call each, as kernels::gemm.
    if (it.g.k > 0)
      gemm(it.g, alpha, *it.a, *it.b, it.beta, *it.c, s);
    else if (it.beta == 0.0f)
      fill(*it.c, 0.0f, s);
    else
      axpby(0.0f, *it.c, it.beta, *it.c, s);
    ++launches;
  }
  for (std::size_t first = 0; first < grouped.size(); first += kMaxGroupedProblems) {
    const auto count = static_cast<int>(std::min<std::size_t>(kMaxGroupedProblems, grouped.size() - first));
    run_pack(alpha, grouped.data() + first, count, s);
    launches += 2;
  }
  return launches;
}

}  // namespace gppf::kernels::cuda
