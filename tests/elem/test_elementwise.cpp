#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/elementwise.hpp"
#include "kernels/ref/elementwise.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::GradMode;
using Vec = std::vector<double>;

constexpr double kTol = 1e-4;

// Odd sizes: below and above the parallel threshold, not a multiple of any vector width.
const std::vector<Shape> kShapes = {{1}, {7, 3}, {3, 5, 7, 9}, {2, 33, 17, 5}};

Vec add_vec(const Vec& a, const Vec& b) { return kernels::ref::add(a, b); }

// Expects op() to throw a gppf::Error whose message names `op_name`.
template <class F>
void expect_error_naming(F op, const std::string& op_name) {
  try {
    op();
    ADD_FAILURE() << "no error thrown for " << op_name;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(op_name), std::string::npos) << e.what();
  }
}

TEST(ElementwiseRef, ReluAndAddReluGradientsMatchFiniteDifferences) {
  const Vec a = test::random_vector(40, 1), b = test::random_vector(40, 2), r = test::random_vector(40, 3);
  auto loss = [&](const Vec& y) { return kernels::ref::dot(y, r); };
  // d/dx sum(relu(x) * r) = relu_bwd(relu(x), r)
  const auto res = test::check_gradient([&](const Vec& x) { return loss(kernels::ref::relu_fwd(x)); }, a,
                                        kernels::ref::relu_bwd(kernels::ref::relu_fwd(a), r), {.kink = 1e-3});
  EXPECT_TRUE(res.ok) << res.message();
  EXPECT_GT(res.checked, 30u);
  // add_relu: both inputs get relu_bwd(y, r)
  auto wrt_a = [&](const Vec& x) { return loss(kernels::ref::add_relu_fwd(x, b)); };
  // The kink of add_relu is at a + b = 0: shift a's coordinates there out of the check by hand.
  Vec a_safe = a;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::abs(a[i] + b[i]) < 1e-3) a_safe[i] += 1e-2;
  const auto res2 =
      test::check_gradient(wrt_a, a_safe, kernels::ref::relu_bwd(kernels::ref::add_relu_fwd(a_safe, b), r));
  EXPECT_TRUE(res2.ok) << res2.message();
}

TEST(ElementwiseRef, AxpbyGradientOfAlphaIsDot) {
  // y = alpha * x + beta * y0: dL/dalpha = dot(x, dL/dy), dL/dx = alpha * dL/dy (the routing gate).
  const Vec x = test::random_vector(33, 4), y0 = test::random_vector(33, 5), r = test::random_vector(33, 6);
  auto loss_alpha = [&](const Vec& alpha) { return kernels::ref::dot(kernels::ref::axpby(alpha[0], x, 0.7, y0), r); };
  const auto res = test::check_gradient(loss_alpha, {0.3}, {kernels::ref::dot(x, r)});
  EXPECT_TRUE(res.ok) << res.message();
  auto loss_x = [&](const Vec& xx) { return kernels::ref::dot(kernels::ref::axpby(0.3, xx, 0.7, y0), r); };
  const auto res2 = test::check_gradient(loss_x, x, kernels::ref::axpby(0.3, r, 0.0, r));
  EXPECT_TRUE(res2.ok) << res2.message();
}

TEST(ElementwiseRef, ReduceRowsIsTheGradientOfABroadcastBias) {
  // L(b) = sum_{r,c} (x[r,c] + b[c]) * g[r,c] -> dL/db = reduce_rows(g).
  const std::int64_t rows = 7, cols = 5;
  const Vec x = test::random_vector(rows * cols, 7), g = test::random_vector(rows * cols, 8);
  auto loss = [&](const Vec& bias) {
    double s = 0.0;
    for (std::int64_t i = 0; i < rows * cols; ++i)
      s += (x[static_cast<std::size_t>(i)] + bias[static_cast<std::size_t>(i % cols)]) * g[static_cast<std::size_t>(i)];
    return s;
  };
  const auto res = test::check_gradient(loss, test::random_vector(cols, 9), kernels::ref::reduce_rows(g, cols));
  EXPECT_TRUE(res.ok) << res.message();
}

TEST(Elementwise, HostMatchesReferenceForwardOps) {
  std::uint64_t seed = 100;
  for (const Shape& shape : kShapes) {
    const Tensor a = test::random_tensor(shape, ++seed), b = test::random_tensor(shape, ++seed);
    const Vec va = test::to_double(a), vb = test::to_double(b);
    Tensor y = Tensor::empty(shape, DType::F32);
    kernels::relu_fwd(a, y);
    EXPECT_LT(test::max_rel_error(y, kernels::ref::relu_fwd(va)), kTol) << shape_str(shape);
    kernels::add(a, b, y);
    EXPECT_LT(test::max_rel_error(y, kernels::ref::add(va, vb)), kTol) << shape_str(shape);
    kernels::add_relu_fwd(a, b, y);
    EXPECT_LT(test::max_rel_error(y, kernels::ref::add_relu_fwd(va, vb)), kTol) << shape_str(shape);
    kernels::fill(y, 2.5f);
    EXPECT_LT(test::max_rel_error(y, Vec(va.size(), 2.5)), kTol);
    for (const float beta : {0.0f, 1.0f, -0.5f}) {
      Tensor yy = b.clone();
      kernels::axpby(1.75f, a, beta, yy);
      EXPECT_LT(test::max_rel_error(yy, kernels::ref::axpby(1.75, va, beta, vb)), kTol) << beta;
      Tensor alpha = Tensor::from_vector({1}, {-0.625f});
      yy = b.clone();
      kernels::axpby_scalar(alpha, a, beta, yy);
      EXPECT_LT(test::max_rel_error(yy, kernels::ref::axpby(-0.625, va, beta, vb)), kTol) << beta;
    }
  }
}

TEST(Elementwise, HostMatchesReferenceReluBackwardBothModes) {
  std::uint64_t seed = 200;
  for (const Shape& shape : kShapes) {
    const Tensor x = test::random_tensor(shape, ++seed), dy = test::random_tensor(shape, ++seed);
    Tensor y = Tensor::empty(shape, DType::F32);
    kernels::relu_fwd(x, y);
    const Vec expect = kernels::ref::relu_bwd(test::to_double(y), test::to_double(dy));
    Tensor dx = test::random_tensor(shape, ++seed);
    const Vec old = test::to_double(dx);
    kernels::relu_bwd(y, dy, dx, GradMode::Accumulate);
    EXPECT_LT(test::max_rel_error(dx, add_vec(old, expect)), kTol) << shape_str(shape);
    kernels::relu_bwd(y, dy, dx, GradMode::Overwrite);
    EXPECT_LT(test::max_rel_error(dx, expect), kTol) << shape_str(shape);
  }
}

TEST(Elementwise, AxpbyWithZeroBetaIgnoresNaN) {
  const Tensor x = test::random_tensor({1000, 7}, 11);
  Tensor y = Tensor::empty({1000, 7}, DType::F32);
  y.fill_(std::numeric_limits<float>::quiet_NaN());
  kernels::axpby(2.0f, x, 0.0f, y);
  EXPECT_LT(test::max_rel_error(y, kernels::ref::axpby(2.0, test::to_double(x), 0.0, {})), kTol);
  // and beta != 0 does read y: NaN propagates
  kernels::fill(y, std::numeric_limits<float>::quiet_NaN());
  kernels::axpby(2.0f, x, 1.0f, y);
  EXPECT_TRUE(std::isnan(y.data_as<float>()[5]));
}

TEST(Elementwise, ReluPropagatesNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor x = Tensor::from_vector({4}, {nan, -1.0f, 2.0f, 0.0f});
  Tensor y = Tensor::empty({4}, DType::F32);
  kernels::relu_fwd(x, y);
  EXPECT_TRUE(std::isnan(y.data_as<float>()[0]));
  EXPECT_EQ(y.data_as<float>()[1], 0.0f);
  kernels::add_relu_fwd(x, x, y);
  EXPECT_TRUE(std::isnan(y.data_as<float>()[0]));
  EXPECT_EQ(y.data_as<float>()[2], 4.0f);
}

TEST(Elementwise, DotMatchesReferenceAndAccumulates) {
  for (const std::int64_t n : {1, 17, 8192, 100003}) {
    const Tensor a = test::random_tensor({n}, 300 + static_cast<std::uint64_t>(n)),
                 b = test::random_tensor({n}, 400 + static_cast<std::uint64_t>(n), 0.0, 1.0);
    const double expect = kernels::ref::dot(test::to_double(a), test::to_double(b));
    Tensor out = Tensor::from_vector({1}, {0.5f});
    kernels::dot(a, b, out, GradMode::Accumulate);
    EXPECT_NEAR(out.data_as<float>()[0], expect + 0.5, 1e-5 * (1 + std::abs(expect))) << n;
    kernels::dot(a, b, out, GradMode::Overwrite);
    EXPECT_NEAR(out.data_as<float>()[0], expect, 1e-5 * (1 + std::abs(expect))) << n;
  }
}

TEST(Elementwise, DotAndReduceRowsAreIdenticalWithOneAndTwoThreads) {
  const Tensor a = test::random_tensor({300007}, 12), b = test::random_tensor({300007}, 13);
  const Tensor x = test::random_tensor({4099, 37}, 14);
  const int saved = omp_get_max_threads();
  std::vector<float> dots, sums[2];
  for (const int threads : {1, 2}) {
    omp_set_num_threads(threads);
    Tensor out = Tensor::zeros({1}, DType::F32);
    kernels::dot(a, b, out, GradMode::Overwrite);
    dots.push_back(out.data_as<float>()[0]);
    Tensor y = Tensor::zeros({37}, DType::F32);
    kernels::reduce_rows(x, y, GradMode::Overwrite);
    sums[threads - 1] = y.to_float_vector();
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(std::memcmp(&dots[0], &dots[1], sizeof(float)), 0) << dots[0] << " vs " << dots[1];
  EXPECT_EQ(sums[0], sums[1]);
}

TEST(Elementwise, ReduceRowsMatchesReferenceBothModes) {
  std::uint64_t seed = 500;
  for (const Shape& shape : std::vector<Shape>{{5}, {9, 1}, {3, 7, 11}, {5000, 3}, {3, 31, 29, 65}}) {
    const Tensor x = test::random_tensor(shape, ++seed);
    const Vec expect = kernels::ref::reduce_rows(test::to_double(x), shape.back());
    Tensor y = test::random_tensor({shape.back()}, ++seed);
    const Vec old = test::to_double(y);
    kernels::reduce_rows(x, y, GradMode::Accumulate);
    EXPECT_LT(test::max_rel_error(y, add_vec(old, expect)), kTol) << shape_str(shape);
    kernels::reduce_rows(x, y, GradMode::Overwrite);
    EXPECT_LT(test::max_rel_error(y, expect), kTol) << shape_str(shape);
  }
}

TEST(Elementwise, ShapeAndDtypeErrorsNameTheOp) {
  const Tensor a = Tensor::zeros({3, 4}, DType::F32), b = Tensor::zeros({4, 3}, DType::F32);
  Tensor y = Tensor::zeros({3, 4}, DType::F32), y_bad = Tensor::zeros({3, 5}, DType::F32);
  Tensor i32 = Tensor::zeros({3, 4}, DType::I32), scalar = Tensor::zeros({1}, DType::F32);
  Tensor two = Tensor::zeros({2}, DType::F32), cols = Tensor::zeros({5}, DType::F32);
  expect_error_naming([&] { kernels::relu_fwd(a, y_bad); }, "relu_fwd");
  expect_error_naming([&] { kernels::relu_bwd(a, b, y, GradMode::Overwrite); }, "relu_bwd");
  expect_error_naming([&] { kernels::add(a, b, y); }, "add");
  expect_error_naming([&] { kernels::add_relu_fwd(a, a, i32); }, "add_relu_fwd");
  expect_error_naming([&] { kernels::axpby(1.0f, a, 0.0f, y_bad); }, "axpby");
  expect_error_naming([&] { kernels::axpby_scalar(two, a, 0.0f, y); }, "axpby_scalar");
  expect_error_naming([&] { kernels::fill(i32, 1.0f); }, "fill");
  expect_error_naming([&] { kernels::dot(a, b, scalar, GradMode::Overwrite); }, "dot");
  expect_error_naming([&] { kernels::dot(a, a, two, GradMode::Overwrite); }, "dot");
  expect_error_naming([&] { kernels::reduce_rows(a, cols, GradMode::Overwrite); }, "reduce_rows");
  // bf16 is a CUDA storage type only
  Tensor bf = Tensor::zeros({3, 4}, DType::BF16);
  expect_error_naming([&] { kernels::relu_fwd(bf, bf); }, "relu_fwd");
}

}  // namespace
}  // namespace gppf
