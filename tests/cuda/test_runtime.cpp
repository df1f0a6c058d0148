#include <gtest/gtest.h>

#include "core/counters.hpp"
#include "core/cuda_runtime.hpp"
#include "core/tensor.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

TEST(CudaRuntime, WithoutCudaDeviceTensorsFailClearly) {
  if (cuda::available()) GTEST_SKIP() << "a GPU is present";
  try {
    Tensor::empty({4}, DType::F32, Device::cuda(0));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}

TEST(CudaRuntime, RoundTripThroughDevice) {
  GPPF_REQUIRE_GPU();
  Tensor h = test::random_tensor({3, 5, 7, 2}, 11);
  Tensor d = h.to(Device::cuda(0));
  EXPECT_EQ(d.device(), Device::cuda(0));
  Tensor back = d.to(Device::host());
  EXPECT_EQ(back.to_float_vector(), h.to_float_vector());
}

TEST(CudaRuntime, CachingAllocatorReusesBlocks) {
  GPPF_REQUIRE_GPU();
  cuda::empty_cache();
  const auto before = cuda::allocator_stats(0).driver_allocs;
  for (int i = 0; i < 10; ++i) Tensor::empty({1000}, DType::F32, Device::cuda(0));
  EXPECT_LE(cuda::allocator_stats(0).driver_allocs - before, 1u);  // 0: a segment other tests left had room
  Tensor z = Tensor::zeros({257}, DType::BF16, Device::cuda(0));
  for (float v : z.to_float_vector()) ASSERT_EQ(v, 0.0f);
}

// The loader's batches: page-locked blocks come back from the cache, not from cudaMallocHost (which,
// like cudaFreeHost, waits for the device).
TEST(CudaRuntime, PinnedBlocksAreReused) {
  GPPF_REQUIRE_GPU();
  cuda::empty_cache();
  void* first = cuda::malloc_pinned(3000);
  cuda::free_pinned(first);
  const auto before = runtime::counters();
  void* again = cuda::malloc_pinned(2900);  // the same size class
  EXPECT_EQ(again, first);
  EXPECT_EQ((runtime::counters() - before).syncs, 0);
  cuda::free_pinned(again);
  Tensor pinned = Tensor::empty({1000}, DType::F32, Device::host(), /*pinned=*/true);
  pinned.fill_(2.0f);
  EXPECT_EQ(pinned.to(Device::cuda(0)).to_float_vector(), std::vector<float>(1000, 2.0f));
}

TEST(CudaRuntime, StreamsOrderCopies) {
  GPPF_REQUIRE_GPU();
  Stream s = cuda::create_stream(0);
  Tensor h = test::random_tensor({1 << 16}, 3);
  Tensor pinned = Tensor::empty(h.shape(), DType::F32, Device::host(), /*pinned=*/true);
  pinned.copy_from(h);
  Tensor d = Tensor::empty(h.shape(), DType::F32, Device::cuda(0));
  d.copy_from(pinned, s);
  Tensor back = d.to(Device::host(), s);
  EXPECT_EQ(back.to_float_vector(), h.to_float_vector());
  cuda::destroy_stream(s);
}

}  // namespace
}  // namespace gppf
