// Finite differences of the detection head's loss as training computes it (src/train/network.cpp):
// CenterNet focal loss on the heat map + 0.1 x L1 on sizes + L1 on offsets, with the host kernels
// in f32, on targets from encode_centernet (Gaussian negatives, centre-cell weights, two images).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "kernels/loss.hpp"
#include "src/train/centernet.hpp"
#include "tests/common/gradcheck.hpp"

namespace gppf::train {
namespace {

struct DetectionLoss {
  CenterNetTargets targets;
  Shape heat_shape, reg_shape;

  // The loss at x = [heat logits, sizes, offsets] (flattened NHWC), and its gradient when grad != null.
  double operator()(const std::vector<double>& x, std::vector<double>* grad) const {
    const auto nh = static_cast<std::size_t>(targets.heatmap.numel());
    const auto nr = static_cast<std::size_t>(targets.size.numel());
    auto slice = [&](const Shape& shape, std::size_t begin, std::size_t n) {
      return Tensor::from_vector(shape, std::vector<float>(x.begin() + static_cast<std::ptrdiff_t>(begin),
                                                           x.begin() + static_cast<std::ptrdiff_t>(begin + n)));
    };
    const Tensor heat = slice(heat_shape, 0, nh), size = slice(reg_shape, nh, nr), off = slice(reg_shape, nh + nr, nr);
    Tensor lh = Tensor::zeros({1}, DType::F32), ls = Tensor::zeros({1}, DType::F32),
           lo = Tensor::zeros({1}, DType::F32);
    Tensor dh = Tensor::zeros(heat_shape, DType::F32), ds = Tensor::zeros(reg_shape, DType::F32),
           dof = Tensor::zeros(reg_shape, DType::F32);
    kernels::centernet_focal_loss({}, heat, targets.heatmap, lh, kernels::GradMode::Overwrite, &dh);
    kernels::RegressionParams rp;
    rp.scale = 0.1f;  // CenterNet's size weight
    kernels::l1_loss(rp, size, targets.size, targets.weight, ls, kernels::GradMode::Overwrite, &ds);
    rp.scale = 1.0f;
    kernels::l1_loss(rp, off, targets.offset, targets.weight, lo, kernels::GradMode::Overwrite, &dof);
    if (grad) {
      grad->clear();
      for (const Tensor* g : {&dh, &ds, &dof})
        grad->insert(grad->end(), g->data_as<float>(), g->data_as<float>() + g->numel());
    }
    return double(lh.data_as<float>()[0]) + ls.data_as<float>()[0] + lo.data_as<float>()[0];
  }
};

TEST(DetectionGrad, FocalPlusL1MatchesFiniteDifferences) {
  const int h = 8, w = 8, classes = 2, stride = 4;
  DetectionLoss loss;
  loss.targets =
      encode_centernet({{{2, 3, 14, 12, 0}, {18, 16, 30, 31, 1}}, {{4, 20, 11, 27, 1}}}, h, w, stride, classes);
  loss.heat_shape = {2, h, w, classes};
  loss.reg_shape = {2, h, w, 2};
  ASSERT_EQ(loss.targets.num_objects, 3);
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> logit(-3.0, 3.0), delta(0.1, 0.6), sign(-1.0, 1.0);
  std::vector<double> x;
  for (std::int64_t i = 0; i < loss.targets.heatmap.numel(); ++i) x.push_back(logit(rng));
  // Sizes and offsets at least 0.1 from their targets: L1's kink stays out of the differences' reach.
  for (const Tensor* t : {&loss.targets.size, &loss.targets.offset})
    for (std::int64_t i = 0; i < t->numel(); ++i)
      x.push_back(t->data_as<float>()[i] + (sign(rng) < 0 ? -1 : 1) * delta(rng));
  std::vector<double> analytic;
  loss(x, &analytic);
  // Each centre cell's size gradient is +-0.1 / 6 (3 objects x 2), offsets +-1 / 6: a missing weight
  // or normaliser is far outside these tolerances, f32 rounding of the summed loss is not.
  test::GradCheckOptions opt;
  opt.step = 1e-2;
  opt.rtol = 1e-2;
  opt.atol = 2e-4;
  const auto r = test::check_gradient([&](const std::vector<double>& v) { return loss(v, nullptr); }, x, analytic, opt);
  EXPECT_TRUE(r.ok) << r.message();
  EXPECT_EQ(r.checked, x.size());
  // Not vacuous: the centre cells' size and offset gradients are non-zero.
  const auto nh = static_cast<std::size_t>(loss.targets.heatmap.numel());
  const auto nonzero = std::count_if(analytic.begin() + static_cast<std::ptrdiff_t>(nh), analytic.end(),
                                     [](double g) { return g != 0.0; });
  EXPECT_EQ(nonzero, 2 * 2 * 3);
}

}  // namespace
}  // namespace gppf::train
