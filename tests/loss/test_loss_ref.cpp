// The double-precision references: gradients against central differences, and values worked out by
// hand on tiny cases.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ref/loss.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::CrossEntropyParams;
using kernels::FocalParams;
using kernels::RegressionParams;
using kernels::SigmoidFocalParams;

std::vector<std::int32_t> random_labels(std::size_t n, std::int32_t classes, std::uint64_t seed) {
  const auto u = test::random_vector(n, seed, 0.0, static_cast<double>(classes));
  std::vector<std::int32_t> y(n);
  for (std::size_t i = 0; i < n; ++i) y[i] = std::min(classes - 1, static_cast<std::int32_t>(u[i]));
  return y;
}

TEST(LossRef, CrossEntropyGradientMatchesFiniteDifferences) {
  const std::int64_t classes = 5;
  std::vector<std::int32_t> labels = random_labels(7, classes, 1);
  labels[2] = labels[5] = -100;  // ignored rows take no part and get no gradient
  const auto x = test::random_vector(labels.size() * classes, 2, -3.0, 3.0);
  for (const float eps : {0.0f, 0.1f, 1.0f}) {
    CrossEntropyParams p;
    p.label_smoothing = eps;
    p.scale = 1.7f;
    std::vector<double> grad;
    kernels::ref::softmax_cross_entropy(p, x, labels, classes, &grad);
    const auto f = [&](const std::vector<double>& v) {
      return kernels::ref::softmax_cross_entropy(p, v, labels, classes);
    };
    const auto r = test::check_gradient(f, x, grad);
    EXPECT_TRUE(r.ok) << "label_smoothing " << eps << ": " << r.message();
    for (std::int64_t c = 0; c < classes; ++c) EXPECT_EQ(grad[2 * classes + c], 0.0);
  }
}

TEST(LossRef, CenterNetFocalGradientMatchesFiniteDifferences) {
  const std::size_t n = 60;
  // Logits up to |8.5| (p from 2e-4 to 0.9998): near 0 and 1 but inside the 1e-4 clamp.
  auto x = test::random_vector(n, 3, -8.5, 8.5);
  auto t = test::random_vector(n, 4, 0.0, 1.0);
  for (std::size_t i = 0; i < n; i += 4) t[i] = 1.0;  // positives
  for (std::size_t i = 1; i < n; i += 5) t[i] = 0.0;
  x[0] = -8.5, x[4] = 8.4, x[1] = 8.5, x[6] = -8.3;  // both extremes for positives and negatives
  for (const auto& [alpha, beta] : {std::pair{2.0f, 4.0f}, std::pair{1.5f, 3.0f}, std::pair{0.5f, 0.0f}}) {
    FocalParams p{alpha, beta, 0.9f};
    std::vector<double> grad;
    kernels::ref::centernet_focal_loss(p, x, t, &grad);
    const auto f = [&](const std::vector<double>& v) { return kernels::ref::centernet_focal_loss(p, v, t); };
    const auto r = test::check_gradient(f, x, grad, {.step = 1e-5, .rtol = 1e-5, .atol = 1e-9});
    EXPECT_TRUE(r.ok) << "alpha " << alpha << " beta " << beta << ": " << r.message();
  }
}

TEST(LossRef, CenterNetFocalClampPassesNoGradient) {
  // sigmoid(-12) < 1e-4: p is clamped to 1e-4, as in CenterNet, so the positive's loss is a constant.
  const std::vector<double> x{-12.0, 0.0}, t{1.0, 0.0};
  std::vector<double> grad;
  const double loss = kernels::ref::centernet_focal_loss({}, x, t, &grad);
  const double p_lo = static_cast<double>(1e-4f);
  const double expect = -std::pow(1 - p_lo, 2) * std::log(p_lo) - std::pow(0.5, 2) * std::log(0.5);
  EXPECT_NEAR(loss, expect, 1e-12);
  EXPECT_EQ(grad[0], 0.0);
  EXPECT_NE(grad[1], 0.0);
}

TEST(LossRef, SigmoidFocalGradientMatchesFiniteDifferences) {
  const std::size_t n = 48;
  const auto x = test::random_vector(n, 5, -9.0, 9.0);
  auto soft = test::random_vector(n, 6, 0.0, 1.0);
  std::vector<double> binary(n);
  for (std::size_t i = 0; i < n; ++i) binary[i] = soft[i] > 0.7 ? 1.0 : 0.0;
  for (const auto& t : {binary, soft}) {
    for (const auto& [alpha, gamma] : {std::pair{0.25f, 2.0f}, std::pair{-1.0f, 1.5f}, std::pair{0.6f, 0.0f}}) {
      SigmoidFocalParams p{alpha, gamma, 1.3f};
      std::vector<double> grad;
      kernels::ref::sigmoid_focal_loss(p, x, t, &grad);
      const auto f = [&](const std::vector<double>& v) { return kernels::ref::sigmoid_focal_loss(p, v, t); };
      const auto r = test::check_gradient(f, x, grad, {.step = 1e-5, .rtol = 1e-5, .atol = 1e-9});
      EXPECT_TRUE(r.ok) << "alpha " << alpha << " gamma " << gamma << ": " << r.message();
    }
  }
}

TEST(LossRef, SmoothL1GradientMatchesFiniteDifferences) {
  const std::size_t n = 40;
  const auto target = test::random_vector(n, 7, -2.0, 2.0);
  const auto mag = test::random_vector(n, 8, 0.05, 2.5);
  const auto w = test::random_vector(n, 9, 0.0, 2.0);
  for (const float beta : {0.0f, 0.5f, 1.0f}) {
    // |pred - target| kept 0.03 away from the kinks at 0 and beta.
    std::vector<double> pred(n);
    for (std::size_t i = 0; i < n; ++i) {
      double m = mag[i];
      if (std::abs(m - beta) < 0.03) m += 0.06;
      pred[i] = target[i] + (i % 2 ? m : -m);
    }
    for (const std::vector<double>* weight : {static_cast<const std::vector<double>*>(nullptr), &w}) {
      RegressionParams p{beta, 0.8f};
      std::vector<double> grad;
      kernels::ref::smooth_l1_loss(p, pred, target, weight, &grad);
      const auto f = [&](const std::vector<double>& v) { return kernels::ref::smooth_l1_loss(p, v, target, weight); };
      const auto r = test::check_gradient(f, pred, grad);
      EXPECT_TRUE(r.ok) << "beta " << beta << (weight ? " weighted" : "") << ": " << r.message();
    }
  }
}

TEST(LossRef, HandComputedValues) {
  // Two classes, logits (0, ln 3): softmax (1/4, 3/4).
  const std::vector<double> x{0.0, std::log(3.0)};
  std::vector<double> g;
  EXPECT_NEAR(kernels::ref::softmax_cross_entropy({}, x, {1}, 2, &g), -std::log(0.75), 1e-12);
  EXPECT_NEAR(g[0], 0.25, 1e-12);
  EXPECT_NEAR(g[1], -0.25, 1e-12);
  // Smoothing 0.2 over 2 classes: q = (0.1, 0.9).
  CrossEntropyParams smooth;
  smooth.label_smoothing = 0.2f;
  EXPECT_NEAR(kernels::ref::softmax_cross_entropy(smooth, x, {1}, 2), -(0.1 * std::log(0.25) + 0.9 * std::log(0.75)),
              1e-7);
  // Every row ignored: 0.
  EXPECT_EQ(kernels::ref::softmax_cross_entropy({}, x, {-100}, 2, &g), 0.0);
  EXPECT_EQ(g[1], 0.0);

  // CenterNet focal at logit 0 (p = 1/2): positive (1/2)^2 ln 2; negative t = 1/2: (1/2)^4 (1/2)^2 ln 2.
  EXPECT_NEAR(kernels::ref::centernet_focal_loss({}, {0.0}, {1.0}), 0.25 * std::log(2.0), 1e-12);
  EXPECT_NEAR(kernels::ref::centernet_focal_loss({}, {0.0}, {0.5}), 0.0625 * 0.25 * std::log(2.0), 1e-12);
  // Two positives normalise by 2.
  EXPECT_NEAR(kernels::ref::centernet_focal_loss({}, {0.0, 0.0}, {1.0, 1.0}), 0.25 * std::log(2.0), 1e-12);

  // RetinaNet focal at logit 0, t = 1: 0.25 * ln 2 * (1/2)^2; t = 0: 0.75 * ln 2 * (1/2)^2.
  EXPECT_NEAR(kernels::ref::sigmoid_focal_loss({}, {0.0}, {1.0}), 0.25 * std::log(2.0) * 0.25, 1e-12);
  EXPECT_NEAR(kernels::ref::sigmoid_focal_loss({}, {0.0}, {0.0}), 0.75 * std::log(2.0) * 0.25, 1e-12);

  // Smooth L1, beta 1: d = (-0.5, 2) -> (0.125, 1.5); mean 0.8125; weights (2, 0) -> 0.25 / 2.
  const std::vector<double> pred{0.0, 2.0}, target{0.5, 0.0}, w{2.0, 0.0};
  EXPECT_NEAR(kernels::ref::smooth_l1_loss({}, pred, target, nullptr), 0.8125, 1e-12);
  EXPECT_NEAR(kernels::ref::smooth_l1_loss({}, pred, target, &w), 0.125, 1e-12);
  EXPECT_NEAR(kernels::ref::smooth_l1_loss({0.0f, 1.0f}, pred, target, nullptr), 1.25, 1e-12);
}

TEST(LossRef, TopkCountsRanks) {
  // Row 0: label 2 is the largest; row 1: label 0 is third; row 2: a tie, the lower index ranks first.
  const std::vector<double> x{0.1, 0.2, 0.9, 0.5, 0.3, 0.4, 0.9, 0.0, 0.7, 0.7, 0.1, 0.2};
  const auto c = kernels::ref::topk_correct(x, {2, 0, 1}, 4, 5);
  EXPECT_EQ(c, (std::vector<std::int64_t>{1, 2, 3, 3, 3}));
}

}  // namespace
}  // namespace gppf
