// The host backend against the double references, and the contract every loss shares: Accumulate,
// scale, stability at extreme logits, errors, determinism across thread counts.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "kernels/cast.hpp"
#include "kernels/loss.hpp"
#include "kernels/ref/loss.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::CrossEntropyParams;
using kernels::FocalParams;
using kernels::GradMode;
using kernels::RegressionParams;
using kernels::SigmoidFocalParams;

constexpr double kTol = 1e-4;

Tensor labels_tensor(const Shape& shape, const std::vector<std::int32_t>& v) {
  Tensor t = Tensor::empty(shape, DType::I32);
  EXPECT_EQ(static_cast<std::size_t>(t.numel()), v.size());
  std::memcpy(t.data(), v.data(), v.size() * sizeof(std::int32_t));
  return t;
}

std::vector<std::int32_t> random_labels(std::size_t n, std::int32_t classes, std::uint64_t seed, int ignore_every = 0,
                                        std::int32_t ignore = -100) {
  const auto u = test::random_vector(n, seed, 0.0, static_cast<double>(classes));
  std::vector<std::int32_t> y(n);
  for (std::size_t i = 0; i < n; ++i) {
    y[i] = std::min(classes - 1, static_cast<std::int32_t>(u[i]));
    if (ignore_every && i % static_cast<std::size_t>(ignore_every) == 1) y[i] = ignore;
  }
  return y;
}

// Heat-map-like targets: mostly small values, some exact ones and zeros.
Tensor heatmap_target(const Shape& shape, std::uint64_t seed) {
  auto t = test::random_vector(static_cast<std::size_t>(shape_numel(shape)), seed, 0.0, 1.0);
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (i % 7 == 3) t[i] = 1.0;
    if (i % 5 == 2) t[i] = 0.0;
    t[i] = t[i] * t[i];
  }
  return Tensor::from_vector(shape, test::to_float(t));
}

float loss_value(const Tensor& loss) { return loss.data_as<float>()[0]; }

TEST(LossHost, CrossEntropyMatchesReference) {
  struct Case {
    Shape shape;
    float eps;
    int ignore;
    float scale;
    double range;
  };
  const Case cases[] = {{{3, 5, 7, 11}, 0.1f, -100, 0.7f, 4.0},
                        {{13, 1}, 0.0f, -100, 1.0f, 3.0},
                        {{9, 1001}, 0.05f, -100, 2.0f, 10.0},
                        {{2, 17, 3}, 1.0f, 2, 1.0f, 5.0},  // an ignore_index inside [0, C)
                        {{31, 6}, 0.0f, 255, 0.3f, 30.0}};
  std::uint64_t seed = 10;
  for (const Case& c : cases) {
    const std::int64_t classes = c.shape.back();
    Shape rows_shape = c.shape;
    rows_shape.pop_back();
    const Tensor x = test::random_tensor(c.shape, ++seed, -c.range, c.range);
    const auto y = random_labels(static_cast<std::size_t>(shape_numel(rows_shape)), static_cast<std::int32_t>(classes),
                                 ++seed, 4, c.ignore);
    const Tensor labels = labels_tensor(rows_shape, y);
    const CrossEntropyParams p{c.ignore, c.eps, c.scale};
    Tensor loss = Tensor::zeros({1}, DType::F32), grad = Tensor::empty(c.shape, DType::F32);
    kernels::softmax_cross_entropy(p, x, labels, loss, GradMode::Overwrite, &grad);
    std::vector<double> g;
    const double l = kernels::ref::softmax_cross_entropy(p, test::to_double(x), y, classes, &g);
    EXPECT_LT(test::max_rel_error(loss, {l}), kTol) << shape_str(c.shape);
    EXPECT_LT(test::max_rel_error(grad, g), kTol) << shape_str(c.shape);
  }
}

TEST(LossHost, CenterNetFocalMatchesReference) {
  std::uint64_t seed = 30;
  for (const Shape& shape : {Shape{2, 9, 11, 5}, Shape{1, 7, 13, 3}, Shape{3, 1, 1, 1}}) {
    for (const auto& [alpha, beta] : {std::pair{2.0f, 4.0f}, std::pair{1.0f, 2.5f}}) {
      // [-12, 12] covers both clamps (|logit| > 9.21).
      const Tensor x = test::random_tensor(shape, ++seed, -12.0, 12.0);
      const Tensor t = heatmap_target(shape, ++seed);
      const FocalParams p{alpha, beta, 1.5f};
      Tensor loss = Tensor::zeros({1}, DType::F32), grad = Tensor::empty(shape, DType::F32);
      kernels::centernet_focal_loss(p, x, t, loss, GradMode::Overwrite, &grad);
      std::vector<double> g;
      const double l = kernels::ref::centernet_focal_loss(p, test::to_double(x), test::to_double(t), &g);
      EXPECT_LT(test::max_rel_error(loss, {l}), kTol) << shape_str(shape);
      EXPECT_LT(test::max_rel_error(grad, g), kTol) << shape_str(shape);
    }
  }
}

TEST(LossHost, SigmoidFocalMatchesReference) {
  std::uint64_t seed = 50;
  for (const Shape& shape : {Shape{3, 11, 13, 9}, Shape{5, 7}}) {
    for (const bool soft : {false, true}) {
      for (const auto& [alpha, gamma] : {std::pair{0.25f, 2.0f}, std::pair{-1.0f, 0.5f}, std::pair{0.5f, 0.0f}}) {
        const Tensor x = test::random_tensor(shape, ++seed, -10.0, 10.0);
        auto tv = test::random_vector(static_cast<std::size_t>(shape_numel(shape)), ++seed, 0.0, 1.0);
        if (!soft)
          for (auto& v : tv) v = v > 0.9 ? 1.0 : 0.0;
        const Tensor t = Tensor::from_vector(shape, test::to_float(tv));
        const SigmoidFocalParams p{alpha, gamma, 0.6f};
        Tensor loss = Tensor::zeros({1}, DType::F32), grad = Tensor::empty(shape, DType::F32);
        kernels::sigmoid_focal_loss(p, x, t, loss, GradMode::Overwrite, &grad);
        std::vector<double> g;
        const double l = kernels::ref::sigmoid_focal_loss(p, test::to_double(x), test::to_double(t), &g);
        EXPECT_LT(test::max_rel_error(loss, {l}), kTol) << shape_str(shape) << " gamma " << gamma;
        EXPECT_LT(test::max_rel_error(grad, g), kTol) << shape_str(shape) << " gamma " << gamma;
      }
    }
  }
}

TEST(LossHost, SmoothL1AndL1MatchReference) {
  std::uint64_t seed = 70;
  for (const Shape& shape : {Shape{4, 9, 13, 2}, Shape{7}, Shape{5, 3}}) {
    const Tensor pred = test::random_tensor(shape, ++seed, -3.0, 3.0);
    const Tensor target = test::random_tensor(shape, ++seed, -3.0, 3.0);
    const Tensor w = test::random_tensor(shape, ++seed, 0.0, 2.0);
    for (const float beta : {0.0f, 0.3f, 1.0f}) {
      for (const bool weighted : {false, true}) {
        const RegressionParams p{beta, 1.25f};
        const Tensor weight = weighted ? w : Tensor();
        Tensor loss = Tensor::zeros({1}, DType::F32), grad = Tensor::empty(shape, DType::F32);
        kernels::smooth_l1_loss(p, pred, target, weight, loss, GradMode::Overwrite, &grad);
        const auto wv = test::to_double(w);
        std::vector<double> g;
        const double l = kernels::ref::smooth_l1_loss(p, test::to_double(pred), test::to_double(target),
                                                      weighted ? &wv : nullptr, &g);
        EXPECT_LT(test::max_rel_error(loss, {l}), kTol) << shape_str(shape) << " beta " << beta;
        EXPECT_LT(test::max_rel_error(grad, g), kTol) << shape_str(shape) << " beta " << beta;
        if (beta == 0.0f) {
          // l1_loss ignores beta.
          Tensor loss1 = Tensor::zeros({1}, DType::F32), grad1 = Tensor::empty(shape, DType::F32);
          kernels::l1_loss({0.7f, 1.25f}, pred, target, weight, loss1, GradMode::Overwrite, &grad1);
          EXPECT_EQ(loss_value(loss1), loss_value(loss));
          EXPECT_EQ(test::max_rel_error(grad1, grad), 0.0);
        }
      }
    }
  }
}

TEST(LossHost, HandComputedValues) {
  // Two classes, logits (0, ln 3), label 1: -ln(3/4); gradient (1/4, -1/4).
  const Tensor x = Tensor::from_vector({1, 2}, {0.0f, std::log(3.0f)});
  Tensor loss = Tensor::zeros({1}, DType::F32), grad = Tensor::empty({1, 2}, DType::F32);
  kernels::softmax_cross_entropy({}, x, labels_tensor({1}, {1}), loss, GradMode::Overwrite, &grad);
  EXPECT_NEAR(loss_value(loss), -std::log(0.75), 1e-6);
  EXPECT_NEAR(grad.data_as<float>()[0], 0.25, 1e-6);
  EXPECT_NEAR(grad.data_as<float>()[1], -0.25, 1e-6);

  kernels::centernet_focal_loss({}, Tensor::from_vector({1, 1, 1, 1}, {0.0f}),
                                Tensor::from_vector({1, 1, 1, 1}, {1.0f}), loss, GradMode::Overwrite, nullptr);
  EXPECT_NEAR(loss_value(loss), 0.25 * std::log(2.0), 1e-6);
  kernels::sigmoid_focal_loss({}, Tensor::from_vector({1}, {0.0f}), Tensor::from_vector({1}, {0.0f}), loss,
                              GradMode::Overwrite, nullptr);
  EXPECT_NEAR(loss_value(loss), 0.75 * std::log(2.0) * 0.25, 1e-6);
  kernels::smooth_l1_loss({}, Tensor::from_vector({2}, {0.0f, 2.0f}), Tensor::from_vector({2}, {0.5f, 0.0f}),
                          Tensor::from_vector({2}, {2.0f, 0.0f}), loss, GradMode::Overwrite, nullptr);
  EXPECT_NEAR(loss_value(loss), 0.125, 1e-7);
  // All weights zero: 0, not NaN.
  kernels::smooth_l1_loss({}, Tensor::from_vector({2}, {0.0f, 2.0f}), Tensor::from_vector({2}, {0.5f, 0.0f}),
                          Tensor::zeros({2}, DType::F32), loss, GradMode::Overwrite, nullptr);
  EXPECT_EQ(loss_value(loss), 0.0f);
}

TEST(LossHost, EveryRowIgnoredGivesZeroLossAndGradient) {
  const Tensor x = test::random_tensor({4, 3}, 90);
  Tensor loss = Tensor::from_vector({1}, {5.0f}), grad = Tensor::from_vector({4, 3}, std::vector<float>(12, 9.0f));
  kernels::softmax_cross_entropy({}, x, labels_tensor({4}, {-100, -100, -100, -100}), loss, GradMode::Overwrite, &grad);
  EXPECT_EQ(loss_value(loss), 0.0f);
  for (const float g : grad.to_float_vector()) EXPECT_EQ(g, 0.0f);
}

TEST(LossHost, AccumulateAddsAndNoGradientKeepsTheLoss) {
  const Shape shape{3, 5, 4};
  const Tensor x = test::random_tensor(shape, 91, -3, 3), t = heatmap_target(shape, 92);
  const Tensor labels = labels_tensor({3, 5}, random_labels(15, 4, 93));
  const auto run = [&](int which, Tensor& loss, GradMode mode, Tensor* grad) {
    switch (which) {
      case 0: kernels::softmax_cross_entropy({}, x, labels, loss, mode, grad); break;
      case 1: kernels::centernet_focal_loss({}, x, t, loss, mode, grad); break;
      case 2: kernels::sigmoid_focal_loss({}, x, t, loss, mode, grad); break;
      default: kernels::smooth_l1_loss({}, x, t, Tensor(), loss, mode, grad); break;
    }
  };
  for (int which = 0; which < 4; ++which) {
    Tensor once = Tensor::zeros({1}, DType::F32), grad = Tensor::empty(shape, DType::F32);
    run(which, once, GradMode::Overwrite, &grad);
    Tensor sum = Tensor::from_vector({1}, {2.5f});
    run(which, sum, GradMode::Accumulate, nullptr);
    EXPECT_EQ(loss_value(sum), 2.5f + loss_value(once)) << which;
    EXPECT_GT(loss_value(once), 0.0f) << which;
  }
}

TEST(LossHost, ScaleMultipliesLossAndGradient) {
  const Shape shape{6, 5};
  const Tensor x = test::random_tensor(shape, 94, -3, 3), t = heatmap_target(shape, 95);
  Tensor l1 = Tensor::zeros({1}, DType::F32), l3 = Tensor::zeros({1}, DType::F32);
  Tensor g1 = Tensor::empty(shape, DType::F32), g3 = Tensor::empty(shape, DType::F32);
  kernels::sigmoid_focal_loss({0.25f, 2.0f, 1.0f}, x, t, l1, GradMode::Overwrite, &g1);
  kernels::sigmoid_focal_loss({0.25f, 2.0f, 3.0f}, x, t, l3, GradMode::Overwrite, &g3);
  EXPECT_NEAR(loss_value(l3), 3.0f * loss_value(l1), 1e-6 * loss_value(l3));
  const auto a = g1.to_float_vector(), b = g3.to_float_vector();
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], 3.0f * a[i], 1e-6 * (std::abs(b[i]) + 1e-12));
}

TEST(LossHost, GradientMayOverwriteTheInput) {
  const Shape shape{7, 9, 6};
  const Tensor x = test::random_tensor(shape, 103, -4, 4), t = heatmap_target(shape, 104);
  const Tensor labels = labels_tensor({7, 9}, random_labels(63, 6, 105, 5));
  for (int which = 0; which < 3; ++which) {
    Tensor loss_a = Tensor::zeros({1}, DType::F32), loss_b = Tensor::zeros({1}, DType::F32);
    Tensor grad = Tensor::empty(shape, DType::F32), inplace = x.clone();
    if (which == 0) {
      kernels::softmax_cross_entropy({-100, 0.2f, 1.0f}, x, labels, loss_a, GradMode::Overwrite, &grad);
      kernels::softmax_cross_entropy({-100, 0.2f, 1.0f}, inplace, labels, loss_b, GradMode::Overwrite, &inplace);
    } else if (which == 1) {
      kernels::centernet_focal_loss({}, x, t, loss_a, GradMode::Overwrite, &grad);
      kernels::centernet_focal_loss({}, inplace, t, loss_b, GradMode::Overwrite, &inplace);
    } else {
      kernels::smooth_l1_loss({}, x, t, t, loss_a, GradMode::Overwrite, &grad);
      kernels::smooth_l1_loss({}, inplace, t, t, loss_b, GradMode::Overwrite, &inplace);
    }
    EXPECT_EQ(loss_value(loss_a), loss_value(loss_b)) << which;
    EXPECT_EQ(test::max_rel_error(inplace, grad), 0.0) << which;
  }
}

bool all_finite(const Tensor& t) {
  for (const float v : t.to_float_vector())
    if (!std::isfinite(v)) return false;
  return true;
}

TEST(LossHost, ExtremeLogitsStayFinite) {
  const Tensor x = Tensor::from_vector({2, 2}, {80.0f, -80.0f, -80.0f, 80.0f});
  Tensor loss = Tensor::zeros({1}, DType::F32), grad = Tensor::empty({2, 2}, DType::F32);
  // Row 0 is wrong by 160, row 1 right by 160: the mean is 80.
  kernels::softmax_cross_entropy({}, x, labels_tensor({2}, {1, 1}), loss, GradMode::Overwrite, &grad);
  EXPECT_NEAR(loss_value(loss), 80.0f, 1e-4);
  EXPECT_TRUE(all_finite(grad));
  EXPECT_NEAR(grad.data_as<float>()[0], 0.5f, 1e-6);

  const Tensor t = Tensor::from_vector({2, 2}, {1.0f, 1.0f, 0.0f, 0.5f});
  for (int which = 0; which < 2; ++which) {
    if (which == 0)
      kernels::centernet_focal_loss({}, x, t, loss, GradMode::Overwrite, &grad);
    else
      kernels::sigmoid_focal_loss({}, x, t, loss, GradMode::Overwrite, &grad);
    EXPECT_TRUE(std::isfinite(loss_value(loss)) && loss_value(loss) > 0.0f) << which;
    EXPECT_TRUE(all_finite(grad)) << which;
  }
  // RetinaNet: the positive at -80 costs alpha * 80 (p_t ~ 0), the one at +80 nothing; 2 positives.
  std::vector<double> g;
  const double l = kernels::ref::sigmoid_focal_loss({}, test::to_double(x), test::to_double(t), &g);
  EXPECT_LT(test::max_rel_error(loss, {l}), kTol);
  EXPECT_LT(test::max_rel_error(grad, g), kTol);
}

TEST(LossHost, InvalidLabelNamesOpValueAndRow) {
  const Tensor x = test::random_tensor({4, 5}, 96);
  Tensor loss = Tensor::zeros({1}, DType::F32), grad = Tensor::from_vector({4, 5}, std::vector<float>(20, 9.0f));
  try {
    kernels::softmax_cross_entropy({}, x, labels_tensor({4}, {0, 1, 2, 7}), loss, GradMode::Overwrite, &grad);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string what = e.reason();
    EXPECT_NE(what.find("softmax_cross_entropy"), std::string::npos) << what;
    EXPECT_NE(what.find("label 7"), std::string::npos) << what;
    EXPECT_NE(what.find("row 3"), std::string::npos) << what;
  }
  EXPECT_EQ(grad.data_as<float>()[0], 9.0f);  // nothing written before the check
  EXPECT_THROW(
      kernels::softmax_cross_entropy({}, x, labels_tensor({4}, {0, -1, 2, 3}), loss, GradMode::Overwrite, nullptr),
      Error);
}

TEST(LossHost, ShapeAndDtypeErrorsNameTheOp) {
  const Tensor x = test::random_tensor({2, 3, 4}, 97);
  Tensor loss = Tensor::zeros({1}, DType::F32);
  const auto expect_error = [](const std::function<void()>& f, const std::string& op, const std::string& shape) {
    try {
      f();
      ADD_FAILURE() << op << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(e.reason().find(op), std::string::npos) << e.reason();
      EXPECT_NE(e.reason().find(shape), std::string::npos) << e.reason();
    }
  };
  expect_error(
      [&] {
        kernels::softmax_cross_entropy({}, x, labels_tensor({2, 4}, std::vector<std::int32_t>(8, 0)), loss,
                                       GradMode::Overwrite, nullptr);
      },
      "softmax_cross_entropy", "[2,4]");
  expect_error(
      [&] {
        kernels::softmax_cross_entropy({}, x, Tensor::zeros({2, 3}, DType::F32), loss, GradMode::Overwrite, nullptr);
      },
      "softmax_cross_entropy", "f32[2,3]");
  expect_error(
      [&] {
        kernels::centernet_focal_loss({}, x, Tensor::zeros({2, 3, 5}, DType::F32), loss, GradMode::Overwrite, nullptr);
      },
      "centernet_focal_loss", "[2,3,5]");
  Tensor bad_grad = Tensor::zeros({2, 3}, DType::F32);
  expect_error([&] { kernels::sigmoid_focal_loss({}, x, x, loss, GradMode::Overwrite, &bad_grad); },
               "sigmoid_focal_loss", "[2,3]");
  Tensor bad_loss = Tensor::zeros({2}, DType::F32);
  expect_error([&] { kernels::smooth_l1_loss({}, x, x, Tensor(), bad_loss, GradMode::Overwrite, nullptr); },
               "smooth_l1_loss", "[2]");
  expect_error(
      [&] { kernels::smooth_l1_loss({}, x, x, Tensor::zeros({4}, DType::F32), loss, GradMode::Overwrite, nullptr); },
      "smooth_l1_loss", "[4]");
  expect_error(
      [&] { kernels::centernet_focal_loss({}, kernels::cast(x, DType::BF16), x, loss, GradMode::Overwrite, nullptr); },
      "centernet_focal_loss", "bf16");
}

// Same bits with 1 and 2 OpenMP threads, on sizes above the parallel threshold.
TEST(LossHost, DeterministicAcrossThreadCounts) {
  const Shape shape{3, 65, 67, 7};
  const Tensor x = test::random_tensor(shape, 98, -6, 6), t = heatmap_target(shape, 99);
  const Tensor labels = labels_tensor({3, 65, 67}, random_labels(3 * 65 * 67, 7, 100, 9));
  const int saved = omp_get_max_threads();
  std::vector<std::vector<float>> results[2];
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    auto& out = results[threads - 1];
    for (int which = 0; which < 4; ++which) {
      Tensor loss = Tensor::zeros({1}, DType::F32), grad = Tensor::empty(shape, DType::F32);
      switch (which) {
        case 0: kernels::softmax_cross_entropy({-100, 0.1f, 1.0f}, x, labels, loss, GradMode::Overwrite, &grad); break;
        case 1: kernels::centernet_focal_loss({}, x, t, loss, GradMode::Overwrite, &grad); break;
        case 2: kernels::sigmoid_focal_loss({}, x, t, loss, GradMode::Overwrite, &grad); break;
        default: kernels::smooth_l1_loss({}, x, t, t, loss, GradMode::Overwrite, &grad); break;
      }
      out.push_back(loss.to_float_vector());
      out.push_back(grad.to_float_vector());
    }
  }
  omp_set_num_threads(saved);
  ASSERT_EQ(results[0].size(), results[1].size());
  for (std::size_t i = 0; i < results[0].size(); ++i)
    EXPECT_EQ(std::memcmp(results[0][i].data(), results[1][i].data(), results[0][i].size() * sizeof(float)), 0)
        << "output " << i;
}

TEST(LossHost, TopkMatchesReference) {
  const std::int64_t n = 37, c = 13;
  auto xv = test::random_vector(static_cast<std::size_t>(n * c), 101, -2.0, 2.0);
  for (auto& v : xv) v = std::round(v * 2.0) / 2.0;  // many ties
  const auto y = random_labels(static_cast<std::size_t>(n), static_cast<std::int32_t>(c), 102);
  const auto got = kernels::topk_correct(Tensor::from_vector({n, c}, test::to_float(xv)), labels_tensor({n}, y), 5);
  EXPECT_EQ(got, kernels::ref::topk_correct(xv, y, c, 5));
  EXPECT_LT(got[0], got[4]);
  EXPECT_EQ(kernels::topk_correct(Tensor::from_vector({n, c}, test::to_float(xv)), labels_tensor({n}, y), 20).back(),
            n);
  EXPECT_THROW(kernels::topk_correct(Tensor::from_vector({1, 2}, {0, 1}), labels_tensor({1}, {2}), 1), Error);
  EXPECT_THROW(kernels::topk_correct(Tensor::from_vector({1, 2}, {0, 1}), labels_tensor({1}, {0}), 0), Error);
}

}  // namespace
}  // namespace gppf
