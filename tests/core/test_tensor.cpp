#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/tensor.hpp"

namespace gppf {
namespace {

TEST(Tensor, ShapeNumelAndDesc) {
  Tensor t = Tensor::empty({2, 5, 7, 3}, DType::F32);
  EXPECT_EQ(t.numel(), 210);
  EXPECT_EQ(t.nbytes(), 840u);
  EXPECT_EQ(t.dim(-1), 3);
  EXPECT_EQ(t.desc(), "f32[2,5,7,3]@host");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % 64, 0u);
  EXPECT_THROW(t.dim(4), Error);
  EXPECT_THROW(Tensor::empty({2, -1}, DType::F32), Error);
}

TEST(Tensor, ReshapeAndNarrowShareStorage) {
  Tensor t = Tensor::from_vector({3, 4}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  Tensor r = t.reshape({-1, 2});
  EXPECT_EQ(r.shape(), (Shape{6, 2}));
  Tensor rows = t.narrow0(1, 2);
  EXPECT_EQ(rows.shape(), (Shape{2, 4}));
  EXPECT_EQ(rows.data_as<float>()[0], 4.0f);
  rows.data_as<float>()[0] = 42.0f;
  EXPECT_EQ(t.data_as<float>()[4], 42.0f);
  EXPECT_THROW(t.reshape({5, -1}), Error);
  EXPECT_THROW(t.narrow0(2, 2), Error);
  EXPECT_THROW(t.data_as<std::int32_t>(), Error);
}

TEST(Tensor, CloneIsDeep) {
  Tensor t = Tensor::from_vector({2}, {1, 2});
  Tensor c = t.clone();
  c.data_as<float>()[0] = 5;
  EXPECT_EQ(t.data_as<float>()[0], 1.0f);
  Tensor z = Tensor::zeros({3}, DType::I64);
  EXPECT_EQ(z.to_float_vector(), (std::vector<float>{0, 0, 0}));
}

TEST(Tensor, ErrorsNameTheOpAndShapes) {
  Tensor t = Tensor::empty({2, 3}, DType::F32);
  try {
    check_shape("conv2d", "weight", t, {3, 3});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv2d: weight expected shape [3,3], got f32[2,3]@host"), std::string::npos)
        << e.what();
  }
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(bf16_to_float(float_to_bf16(3.140625f)), 3.140625f);
  // 1 + 2^-8 is exactly half-way between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
}

TEST(DType, F16RoundTripsAndRounds) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f})
    EXPECT_EQ(f16_to_float(float_to_f16(v)), v) << v;
  EXPECT_EQ(float_to_f16(1.0f).bits, 0x3c00);
  EXPECT_EQ(float_to_f16(-2.0f).bits, 0xc000);
  EXPECT_TRUE(std::isinf(f16_to_float(float_to_f16(70000.0f))));
  EXPECT_EQ(f16_to_float(float_to_f16(1.0f + 1.0f / 2048)), 1.0f);  // tie to even
  EXPECT_EQ(f16_to_float(float_to_f16(1.0f + 3.0f / 2048)), 1.0f + 2.0f / 1024);
  EXPECT_EQ(f16_to_float(float_to_f16(1e-9f)), 0.0f);
  EXPECT_EQ(parse_dtype("bf16"), DType::BF16);
  EXPECT_THROW(parse_dtype("f64"), Error);
}

TEST(Device, Parse) {
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
  EXPECT_EQ(Device::parse("cpu"), Device::host());
  EXPECT_THROW(Device::parse("cuda:x"), Error);
}

}  // namespace
}  // namespace gppf
