// The merged lego block's pixel-wise kernels (kernels/merged.hpp) against their plain references,
// at the compile-time row widths 8, 16, 32 of gram_correct and an odd one.
#include <gtest/gtest.h>

#include "kernels/merged.hpp"
#include "kernels/ref/merged.hpp"
#include "tests/common/util.hpp"

namespace gppf::kernels {
namespace {

TEST(MergedKernels, MatchTheirReferences) {
  for (const std::int64_t C : {5, 8, 16, 32}) {
    SCOPED_TRACE(str("C = ", C));
    const Shape shape{2, 7, 11, C};  // 154 pixels: several 64-pixel blocks and a ragged end
    const Tensor x = test::random_tensor(shape, 1), s = test::random_tensor(shape, 2);
    const Tensor mean = test::random_tensor({C}, 3), scale = test::random_tensor({C}, 4),
                 shift = test::random_tensor({C}, 5);
    Tensor out = Tensor::empty(shape, DType::F32);
    center_channels(x, mean, out);
    EXPECT_LT(test::max_rel_error(out, ref::center_channels(test::to_double(x), test::to_double(mean), C)), 1e-6);

    Tensor y = x.clone();
    add_affine_relu(y, s, scale, shift);
    EXPECT_LT(test::max_rel_error(y, ref::add_affine_relu(test::to_double(x), test::to_double(s),
                                                          test::to_double(scale), test::to_double(shift), C)),
              1e-5);

    for (const bool with_z : {false, true}) {
      Tensor da = Tensor::empty(shape, DType::F32);
      const auto sums = relu_bwd_channel_sums(x, s, with_z ? y : Tensor(), with_z ? mean : Tensor(), da);
      std::vector<double> da_ref;
      const auto want = ref::relu_bwd_channel_sums(test::to_double(x), test::to_double(s),
                                                   with_z ? test::to_double(y) : std::vector<double>{},
                                                   test::to_double(mean), C, da_ref);
      EXPECT_LT(test::max_rel_error(da, da_ref), 1e-7);
      EXPECT_LT(test::max_rel_error(sums, want, 1e-3), 1e-5);
    }

    const Tensor g = test::random_tensor({C * C}, 6), h = test::random_tensor({C}, 7);
    Tensor d = s.clone();
    gram_correct(d, x, g, h);
    EXPECT_LT(
        test::max_rel_error(
            d, ref::gram_correct(test::to_double(s), test::to_double(x), test::to_double(g), test::to_double(h), C),
            1e-3),
        1e-5);

    Tensor dz = Tensor::empty(shape, DType::F32);
    bn_input_grad(s, x, mean, scale, shift, h, dz);
    EXPECT_LT(
        test::max_rel_error(dz,
                            ref::bn_input_grad(test::to_double(s), test::to_double(x), test::to_double(mean),
                                               test::to_double(scale), test::to_double(shift), test::to_double(h), C),
                            1e-4),
        1e-5);
  }
}

TEST(MergedKernels, NameTheOperandThatDoesNotFit) {
  Tensor y = test::random_tensor({4, 3}, 1);
  try {
    add_affine_relu(y, y, test::random_tensor({2}, 2), test::random_tensor({3}, 3));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("add_affine_relu: scale"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gppf::kernels
