#include <gtest/gtest.h>

#include <cstring>

#include "kernels/cast.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

TEST(Cast, CudaMatchesHostBitwise) {
  GPPF_REQUIRE_GPU();
  Tensor x = test::random_tensor({1000, 3}, 5, -70000, 70000);
  for (DType to : {DType::BF16, DType::F16}) {
    Tensor host = kernels::cast(x, to);
    Tensor dev = kernels::cast(x.to(Device::cuda(0)), to);
    Tensor dev_h = dev.to(Device::host());
    ASSERT_EQ(std::memcmp(dev_h.data(), host.data(), host.nbytes()), 0) << dtype_name(to);
  }
}

}  // namespace
}  // namespace gppf
