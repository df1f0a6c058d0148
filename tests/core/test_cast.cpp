#include <gtest/gtest.h>

#include "kernels/cast.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

TEST(Cast, HostRoundTripsMatchScalarConversions) {
  Tensor x = test::random_tensor({5, 7, 3}, 4, -100, 100);
  Tensor b = kernels::cast(x, DType::BF16);
  Tensor h = kernels::cast(x, DType::F16);
  const float* xs = x.data_as<float>();
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_EQ(b.data_as<bf16>()[i].bits, float_to_bf16(xs[i]).bits);
    ASSERT_EQ(h.data_as<f16>()[i].bits, float_to_f16(xs[i]).bits);
  }
  Tensor back = kernels::cast(b, DType::F32);
  EXPECT_LT(test::max_rel_error(back, x), 1.0 / 128);
  EXPECT_THROW(kernels::cast(Tensor::zeros({2}, DType::I32), DType::F32), Error);
}

}  // namespace
}  // namespace gppf
