#include <gtest/gtest.h>

#include <limits>

#include "kernels/ref/resample.hpp"
#include "kernels/resample.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::GradMode;
using kernels::UpsampleMode;
using kernels::UpsampleParams;
using Vec = std::vector<double>;

constexpr double kTol = 1e-4;
const UpsampleParams kNearest{UpsampleMode::Nearest}, kBilinear{UpsampleMode::Bilinear};

TEST(Upsample, Bilinear2x2To4x4MatchesHandComputedValues) {
  // PyTorch F.interpolate([[1, 2], [3, 4]], size=(4, 4), mode="bilinear", align_corners=False).
  const Tensor x = Tensor::from_vector({1, 2, 2, 1}, {1, 2, 3, 4});
  Tensor y = Tensor::empty({1, 4, 4, 1}, DType::F32);
  kernels::upsample_fwd(kBilinear, x, y);
  const Vec expect = {1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0};
  EXPECT_LT(test::max_rel_error(y, expect), 1e-6);
  EXPECT_LT(
      test::max_rel_error(kernels::ref::upsample_fwd(kBilinear, {1, 2, 2, 1}, {1, 2, 3, 4}, {1, 4, 4, 1}), expect),
      1e-12);
  // The backward spreads each output gradient over the same taps: all ones in -> 4 per input pixel.
  Tensor dx = Tensor::empty({1, 2, 2, 1}, DType::F32);
  kernels::upsample_bwd(kBilinear, Tensor::from_vector({1, 4, 4, 1}, std::vector<float>(16, 1.0f)), dx,
                        GradMode::Overwrite);
  EXPECT_LT(test::max_rel_error(dx, Vec{4, 4, 4, 4}), 1e-6);
}

TEST(Upsample, NearestMatchesHandComputedValues) {
  // 3 -> 5 along W: sources floor(d * 3 / 5) = 0, 0, 1, 1, 2; 2 -> 3 along H: 0, 0, 1.
  const Tensor x = Tensor::from_vector({1, 2, 3, 1}, {1, 2, 3, 4, 5, 6});
  Tensor y = Tensor::empty({1, 3, 5, 1}, DType::F32);
  kernels::upsample_fwd(kNearest, x, y);
  EXPECT_LT(test::max_rel_error(y, Vec{1, 1, 2, 2, 3, 1, 1, 2, 2, 3, 4, 4, 5, 5, 6}), 1e-7);
  // Bilinear, 3 -> 5 along one axis: src = 0.6 * (d + 0.5) - 0.5 = 0 (clamped), 0.4, 1.0, 1.6, 2.2 (-> index 2).
  Tensor y2 = Tensor::empty({1, 1, 5, 1}, DType::F32);
  kernels::upsample_fwd(kBilinear, Tensor::from_vector({1, 1, 3, 1}, {10, 20, 40}), y2);
  EXPECT_LT(test::max_rel_error(y2, Vec{10, 14, 20, 32, 40}), 1e-6);
}

TEST(UpsampleRef, BackwardMatchesFiniteDifferences) {
  for (const UpsampleParams& p : {kNearest, kBilinear})
    for (const auto& [xs, ys] :
         {std::pair{Shape{1, 3, 2, 2}, Shape{1, 5, 5, 2}}, std::pair{Shape{2, 5, 4, 1}, Shape{2, 3, 7, 1}}}) {
      const std::size_t ny = static_cast<std::size_t>(shape_numel(ys));
      const Vec x = test::random_vector(static_cast<std::size_t>(shape_numel(xs)), 1), r = test::random_vector(ny, 2);
      auto loss = [&](const Vec& v) {
        const Vec y = kernels::ref::upsample_fwd(p, xs, v, ys);
        double s = 0.0;
        for (std::size_t i = 0; i < ny; ++i) s += y[i] * r[i];
        return s;
      };
      const auto res = test::check_gradient(loss, x, kernels::ref::upsample_bwd(p, xs, ys, r));
      EXPECT_TRUE(res.ok) << kernels::upsample_mode_name(p.mode) << ' ' << shape_str(xs) << ": " << res.message();
    }
}

TEST(Upsample, HostMatchesReferenceOnOddAndNonIntegerScales) {
  const std::vector<std::pair<Shape, Shape>> cases = {{{1, 1, 1, 1}, {1, 1, 1, 1}},      {{2, 5, 7, 3}, {2, 10, 14, 3}},
                                                      {{1, 7, 5, 9}, {1, 15, 11, 9}},    {{3, 6, 9, 2}, {3, 9, 13, 2}},
                                                      {{1, 9, 13, 5}, {1, 4, 6, 5}},     {{2, 1, 3, 4}, {2, 7, 3, 4}},
                                                      {{1, 13, 11, 33}, {1, 37, 29, 33}}};
  std::uint64_t seed = 40;
  for (const UpsampleParams& p : {kNearest, kBilinear})
    for (const auto& [xs, ys] : cases) {
      const std::string what = str(kernels::upsample_mode_name(p.mode), ' ', shape_str(xs), " -> ", shape_str(ys));
      const Tensor x = test::random_tensor(xs, ++seed), dy = test::random_tensor(ys, ++seed);
      Tensor y = Tensor::empty(ys, DType::F32);
      kernels::upsample_fwd(p, x, y);
      EXPECT_LT(test::max_rel_error(y, kernels::ref::upsample_fwd(p, xs, test::to_double(x), ys)), kTol) << what;

      const Vec expect = kernels::ref::upsample_bwd(p, xs, ys, test::to_double(dy));
      Tensor dx = test::random_tensor(xs, ++seed);
      Vec with_old = test::to_double(dx);
      for (std::size_t i = 0; i < with_old.size(); ++i) with_old[i] += expect[i];
      kernels::upsample_bwd(p, dy, dx, GradMode::Accumulate);
      EXPECT_LT(test::max_rel_error(dx, with_old), kTol) << what;
      dx.fill_(std::numeric_limits<float>::quiet_NaN());
      kernels::upsample_bwd(p, dy, dx, GradMode::Overwrite);
      EXPECT_LT(test::max_rel_error(dx, expect), kTol) << what;
    }
}

TEST(Upsample, ShapeErrorsNameTheOp) {
  const Tensor x = Tensor::zeros({1, 2, 2, 3}, DType::F32);
  Tensor bad_c = Tensor::zeros({1, 4, 4, 2}, DType::F32), bad_rank = Tensor::zeros({4, 4, 3}, DType::F32);
  for (Tensor* y : {&bad_c, &bad_rank}) {
    try {
      kernels::upsample_fwd(kBilinear, x, *y);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("upsample_fwd"), std::string::npos) << e.what();
    }
  }
  Tensor dx = Tensor::zeros({2, 2, 2, 3}, DType::F32);
  EXPECT_THROW(kernels::upsample_bwd(kNearest, Tensor::zeros({1, 4, 4, 3}, DType::F32), dx, GradMode::Overwrite),
               Error);
}

}  // namespace
}  // namespace gppf
