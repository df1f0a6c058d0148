#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "core/counters.hpp"
#include "core/cuda_runtime.hpp"
#include "core/tensor.hpp"
#include "src/train/staging.hpp"
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

// The input upload's ordering (src/train/staging.hpp): a copy of page-locked memory on the copy
// stream, an event after it, and the compute stream (the legacy default one) waiting for that event
// on the device before it reads the destination. The wait is no host sync; the event is done after
// an event synchronise (which is one).
TEST(CudaRuntime, TheComputeStreamWaitsForACopyStreamUploadByAnEvent) {
  GPPF_REQUIRE_GPU();
  const Stream compute{Device::cuda(0), nullptr};
  const Stream copy = cuda::copy_stream(0);
  EXPECT_NE(copy.handle, nullptr);
  EXPECT_EQ(cuda::copy_stream(0).handle, copy.handle);  // one per device, made once
  Tensor h = test::random_tensor({1 << 22}, 5);         // 16 MiB: the copy outlasts the host's next calls
  Tensor pinned = Tensor::empty(h.shape(), DType::F32, Device::host(), /*pinned=*/true);
  pinned.copy_from(h);
  Tensor d = Tensor::empty(h.shape(), DType::F32, Device::cuda(0));
  const cuda::Event done = cuda::create_event(0);
  const runtime::Counters before = runtime::counters();
  d.copy_from(pinned, copy);
  cuda::record_event(done, copy);
  cuda::stream_wait_event(compute, done);
  Tensor again = Tensor::empty(h.shape(), DType::F32, Device::cuda(0));
  again.copy_from(d, compute);  // device to device, ordered after the upload by the event only
  const runtime::Counters used = runtime::counters() - before;
  EXPECT_EQ(used.syncs, 0);
  EXPECT_EQ(used.event_waits, 1);
  EXPECT_EQ(read_back(again, compute).to_float_vector(), h.to_float_vector());
  cuda::event_synchronize(done);
  EXPECT_TRUE(cuda::event_done(done));
  EXPECT_EQ((runtime::counters() - before).syncs, 2);  // the read back and the event synchronise
  cuda::destroy_event(done);
}

// Upload keeps what its copies read and write until a compute stream has waited for them; dropped
// unawaited, it waits for them itself, so that the page-locked block can go back to the cache.
TEST(CudaRuntime, AnUploadAwaitedByTheComputeStreamGivesTheValues) {
  GPPF_REQUIRE_GPU();
  const Stream compute{Device::cuda(0), nullptr};
  Tensor h = test::random_tensor({3, 64, 64, 3}, 9);
  Tensor pinned = Tensor::empty(h.shape(), DType::F32, Device::host(), /*pinned=*/true);
  pinned.copy_from(h);
  Tensor d = Tensor::empty(h.shape(), DType::F32, Device::cuda(0));
  std::vector<Tensor> kept;
  {
    train::Upload up(Device::cuda(0));
    up.after(compute);  // `d` is fresh from the cache
    up.copy(d, pinned);
    up.finish();
    kept = up.await(compute);
  }
  EXPECT_EQ(kept.size(), 2u);  // the source and the destination
  EXPECT_EQ(read_back(d, compute).to_float_vector(), h.to_float_vector());
  Tensor d2 = Tensor::empty(h.shape(), DType::F32, Device::cuda(0));
  const runtime::Counters before = runtime::counters();
  {
    train::Upload dropped(Device::cuda(0));
    dropped.copy(d2, pinned);
    dropped.finish();
  }
  EXPECT_EQ((runtime::counters() - before).syncs, 1);  // the destructor's event synchronise
  EXPECT_EQ(d2.to(Device::host()).to_float_vector(), h.to_float_vector());
}

TEST(CudaRuntime, WithoutCudaEventsAndTheCopyStreamFailClearly) {
  if (cuda::available()) GTEST_SKIP() << "a GPU is present";
  for (const auto& call :
       std::vector<std::function<void()>>{[] { (void)cuda::copy_stream(0); }, [] { (void)cuda::create_event(0); }}) {
    try {
      call();
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      if (!cuda::built_with_cuda()) {
        EXPECT_NE(std::string(e.what()).find("built without CUDA"), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace gppf
