// NCCL on one GPU (scripts/device-check.sh): a 1-rank communicator's all-reduce is the identity and its
// all-to-all moves the send buffer to the receive buffer; without CUDA the calls fail clearly.
// Several GPUs: docs/SCALING.md, "multi-GPU tests".
#include <gtest/gtest.h>

#include "core/cuda_runtime.hpp"
#include "core/tensor.hpp"
#include "gppf/build_info.hpp"
#include "src/dist/nccl.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

TEST(Nccl, WithoutCudaTheCommunicatorFailsClearly) {
  if (build::kCuda) GTEST_SKIP() << "built with CUDA: NCCL is there (with or without a GPU)";
  try {
    dist::NcclComm::unique_id();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("without CUDA"), std::string::npos) << e.what();
  }
}

TEST(Nccl, OneRankAllReduceAndAllToAll) {
  GPPF_REQUIRE_GPU();
  dist::NcclComm comm(1, 0, dist::NcclComm::unique_id(), 0);
  const Stream s = cuda::create_stream(0);
  Tensor h = test::random_tensor({1000}, 3);
  Tensor d = h.to(Device::cuda(0));
  comm.allreduce_sum(d.data_as<float>(), d.numel(), s);
  cuda::synchronize(s);
  EXPECT_EQ(d.to(Device::host()).to_float_vector(), h.to_float_vector());
  Tensor out = Tensor::zeros({1000}, DType::F32, Device::cuda(0));
  comm.alltoallv(d.data_as<float>(), {1000}, out.data_as<float>(), {1000}, s);
  cuda::synchronize(s);
  EXPECT_EQ(out.to(Device::host()).to_float_vector(), h.to_float_vector());
}

}  // namespace
}  // namespace gppf
