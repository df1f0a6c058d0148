// The multi-tensor packs the CUDA optimizer launches (kernels/functors/multi_tensor.hpp), run here on
// the host through the same functors: every element of every tensor updated once, as by one launch
// per tensor (to an ulp: two translation units may contract multiply-adds differently), across pack
// boundaries and past empty tensors.
#include <gtest/gtest.h>

#include <algorithm>

#include "core/counters.hpp"
#include "kernels/functors/multi_tensor.hpp"
#include "kernels/optim.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

TEST(MultiTensor, PacksVisitEveryElementOnceAsOneLaunchPerTensor) {
  using kernels::SgdFunctor;
  using Pack = kernels::TensorPack<SgdFunctor>;
  ASSERT_GE(Pack::kCapacity, 16);
  EXPECT_LE(sizeof(Pack), 4096u - 8u);  // CUDA's kernel parameters, the grid-stride count included
  const int tensors = 2 * Pack::kCapacity + 40;
  std::vector<Tensor> p1, p2, grads, m1, m2;
  std::vector<SgdFunctor> a, b;
  std::vector<std::int64_t> ns;
  for (int k = 0; k < tensors; ++k) {
    const std::int64_t n = k % 7 == 3 ? 0 : 1 + (k * 37) % 301;
    grads.push_back(test::random_tensor({n}, 100 + k));
    p1.push_back(test::random_tensor({n}, 500 + k));
    m1.push_back(test::random_tensor({n}, 900 + k));
    p2.push_back(p1.back().clone());
    m2.push_back(m1.back().clone());
    ns.push_back(n);
  }
  for (int k = 0; k < tensors; ++k) {
    a.push_back({p1[k].data_as<float>(), grads[k].data_as<float>(), m1[k].data_as<float>(), 0.1f, 0.9f, 1e-4f, 0.5f,
                 k % 2 == 0});
    b.push_back({p2[k].data_as<float>(), grads[k].data_as<float>(), m2[k].data_as<float>(), 0.1f, 0.9f, 1e-4f, 0.5f,
                 k % 2 == 0});
  }
  kernels::host::sgd_update(a, ns);
  const auto packs = kernels::make_packs(std::span<const SgdFunctor>(b), std::span<const std::int64_t>(ns));
  std::int64_t nonempty = 0;
  for (std::int64_t n : ns) nonempty += n > 0;
  EXPECT_EQ(static_cast<std::int64_t>(packs.size()), (nonempty + Pack::kCapacity - 1) / Pack::kCapacity);
  EXPECT_GE(packs.size(), 3u);
  for (const Pack& pack : packs)
    for (std::int64_t i = 0; i < pack.total(); ++i) pack(i);
  for (int k = 0; k < tensors; ++k) {
    EXPECT_LT(test::max_rel_error(p2[k], p1[k]), 1e-6) << "tensor " << k;
    EXPECT_LT(test::max_rel_error(m2[k], m1[k]), 1e-6) << "tensor " << k;
  }
}

// The reduction packs as the two CUDA launches use them: every chunk of every tensor summed once, an
// empty tensor's output zero, each output the tensor's sum of squares.
TEST(MultiTensor, ReducePacksCoverEveryChunkOnce) {
  using kernels::SumSquaresFunctor;
  using Pack = kernels::ReducePack<SumSquaresFunctor>;
  EXPECT_LE(sizeof(Pack), 4096u - 8u);
  const int tensors = Pack::kCapacity + 7;
  std::vector<Tensor> xs;
  std::vector<SumSquaresFunctor> fs;
  std::vector<std::int64_t> ns;
  std::vector<double> outs(2 * static_cast<std::size_t>(tensors), -1.0);
  std::vector<double*> out_ptrs;
  for (int k = 0; k < tensors; ++k) {
    const std::int64_t n = k == 2 ? 0 : k == 5 ? 3 * kernels::kReduceChunk + 11 : 1 + (k * 53) % 900;
    xs.push_back(test::random_tensor({n}, 40 + k));
    fs.push_back({xs.back().data_as<float>(), nullptr});
    ns.push_back(n);
    out_ptrs.push_back(&outs[2 * static_cast<std::size_t>(k)]);
  }
  const auto packs = kernels::make_reduce_packs(std::span<const SumSquaresFunctor>(fs),
                                                std::span<const std::int64_t>(ns), std::span<double* const>(out_ptrs));
  ASSERT_EQ(packs.size(), 2u);
  for (const Pack& p : packs) {  // pack_chunk_sums, then pack_fold, one "block" at a time
    std::vector<double> partial(2 * static_cast<std::size_t>(p.chunks()), 0.0);
    for (std::int64_t c = 0; c < p.chunks(); ++c) {
      const int k = p.tensor_of_chunk(c);
      std::int64_t begin = 0, end = 0;
      p.chunk_range(k, c, begin, end);
      for (std::int64_t i = begin; i < end; ++i) p.f[k](i, partial[2 * c], partial[2 * c + 1]);
    }
    for (int k = 0; k < p.count; ++k) {
      p.out[k][0] = p.out[k][1] = 0.0;
      for (std::int64_t c = p.first_chunk(k); c < p.chunk_end[k]; ++c) p.out[k][0] += partial[2 * c];
    }
  }
  for (int k = 0; k < tensors; ++k) {
    double want = 0;
    for (float v : xs[static_cast<std::size_t>(k)].to_float_vector()) want += static_cast<double>(v) * v;
    EXPECT_NEAR(outs[2 * static_cast<std::size_t>(k)], want, 1e-9 * std::max(1.0, want)) << "tensor " << k;
    EXPECT_EQ(outs[2 * static_cast<std::size_t>(k) + 1], 0.0);
  }
}

// The trainer's BN snapshot: many tensors copied with one count of launches per pack, refusing a
// mismatch by name.
TEST(MultiTensor, CopyTensorsCopiesEveryTensorAndCountsPacks) {
  std::vector<Tensor> src, dst;
  for (int k = 0; k < 150; ++k) {
    src.push_back(test::random_tensor({1 + k % 9}, 7 + k));
    dst.push_back(Tensor::zeros({1 + k % 9}, DType::F32));
  }
  std::vector<kernels::CopyJob> jobs;
  for (std::size_t k = 0; k < src.size(); ++k) jobs.push_back({&src[k], &dst[k]});
  const auto before = runtime::counters();
  kernels::copy_tensors(jobs);
  const std::int64_t packs = (150 + kernels::TensorPack<kernels::CopyFunctor>::kCapacity - 1) /
                             kernels::TensorPack<kernels::CopyFunctor>::kCapacity;
  EXPECT_EQ((runtime::counters() - before).launches, packs);
  for (std::size_t k = 0; k < src.size(); ++k) EXPECT_EQ(dst[k].to_float_vector(), src[k].to_float_vector()) << k;
  Tensor wrong = Tensor::zeros({3}, DType::F32);
  const kernels::CopyJob bad{&src[10], &wrong};  // 2 values into 3
  EXPECT_THROW(kernels::copy_tensors(std::span<const kernels::CopyJob>(&bad, 1)), Error);
}

}  // namespace
}  // namespace gppf
