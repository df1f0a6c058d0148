#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>

#include "kernels/cast.hpp"
#include "kernels/functors/pool.hpp"
#include "kernels/pool.hpp"
#include "kernels/ref/pool.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {
using test::error_of;

using kernels::GradMode;
using kernels::Pool2dParams;
using Vec = std::vector<double>;

Pool2dParams pool(int kh, int kw, int sh, int sw, int ph, int pw, bool include_pad = false) {
  Pool2dParams p;
  p.kernel_h = kh;
  p.kernel_w = kw;
  p.stride_h = sh;
  p.stride_w = sw;
  p.pad_h = ph;
  p.pad_w = pw;
  p.count_include_pad = include_pad;
  return p;
}

std::string name(const Pool2dParams& p) {
  return "k" + std::to_string(p.kernel_h) + "x" + std::to_string(p.kernel_w) + " s" + std::to_string(p.stride_h) + "x" +
         std::to_string(p.stride_w) + " p" + std::to_string(p.pad_h) + "x" + std::to_string(p.pad_w) +
         (p.count_include_pad ? " incl" : "");
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Distinct values 0.01 apart in random order: no window has a tie within reach of the FD step.
Vec distinct_values(std::size_t n, std::uint64_t seed) {
  Vec v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = 0.01 * static_cast<double>(i) - 0.005 * static_cast<double>(n);
  std::shuffle(v.begin(), v.end(), std::mt19937_64(seed));
  return v;
}

const std::vector<Pool2dParams>& spread() {
  static const std::vector<Pool2dParams> params = {
      pool(2, 2, 2, 2, 0, 0), pool(3, 3, 2, 2, 1, 1),       pool(3, 3, 2, 2, 1, 1, true), pool(3, 3, 1, 1, 1, 1),
      pool(2, 2, 1, 1, 0, 0), pool(3, 3, 3, 3, 0, 0),       pool(1, 1, 1, 1, 0, 0),       pool(3, 2, 2, 1, 1, 1),
      pool(2, 3, 1, 2, 1, 0), pool(2, 3, 1, 2, 1, 0, true), pool(5, 5, 2, 2, 2, 2),
  };
  return params;
}

TEST(PoolRef, MaxBackwardMatchesFiniteDifferences) {
  const Shape xs{2, 5, 6, 3};
  for (const auto& p : {pool(3, 3, 2, 2, 1, 1), pool(2, 2, 1, 1, 0, 0), pool(3, 2, 2, 1, 1, 1)}) {
    SCOPED_TRACE(name(p));
    const Vec x = distinct_values(static_cast<std::size_t>(shape_numel(xs)), 1);
    const Vec w = test::random_vector(static_cast<std::size_t>(shape_numel(kernels::pool2d_output_shape(p, xs))), 2);
    const Vec dx = kernels::ref::maxpool2d_bwd(p, xs, x, w);
    auto f = [&](const Vec& v) { return dot(w, kernels::ref::maxpool2d_fwd(p, xs, v)); };
    const auto r = test::check_gradient(f, x, dx);
    EXPECT_TRUE(r.ok) << r.message();
  }
}

TEST(PoolRef, AvgBackwardMatchesFiniteDifferences) {
  const Shape xs{2, 5, 6, 3};
  for (const auto& p : {pool(3, 3, 2, 2, 1, 1), pool(3, 3, 2, 2, 1, 1, true), pool(2, 3, 1, 2, 1, 0)}) {
    SCOPED_TRACE(name(p));
    const Vec x = test::random_vector(static_cast<std::size_t>(shape_numel(xs)), 3);
    const Vec w = test::random_vector(static_cast<std::size_t>(shape_numel(kernels::pool2d_output_shape(p, xs))), 4);
    const Vec dx = kernels::ref::avgpool2d_bwd(p, xs, w);
    auto f = [&](const Vec& v) { return dot(w, kernels::ref::avgpool2d_fwd(p, xs, v)); };
    const auto r = test::check_gradient(f, x, dx);
    EXPECT_TRUE(r.ok) << r.message();
  }
}

TEST(PoolRef, GlobalAvgBackwardMatchesFiniteDifferences) {
  const Shape xs{2, 3, 4, 5};
  const Vec x = test::random_vector(120, 5), w = test::random_vector(10, 6);
  const Vec dx = kernels::ref::global_avgpool_bwd(xs, w);
  auto f = [&](const Vec& v) { return dot(w, kernels::ref::global_avgpool_fwd(xs, v)); };
  const auto r = test::check_gradient(f, x, dx);
  EXPECT_TRUE(r.ok) << r.message();
}

TEST(PoolRef, PaddingIsNeverTheMaximumAndCountsPerMode) {
  // All-negative input: a zero-padded max would return 0 at the border.
  const Shape xs{1, 2, 2, 1};
  const Vec x = {-1, -2, -3, -4};
  const auto p = pool(3, 3, 1, 1, 1, 1);
  EXPECT_EQ(kernels::ref::maxpool2d_fwd(p, xs, x), (Vec{-1, -1, -1, -1}));
  EXPECT_EQ(kernels::ref::avgpool2d_fwd(p, xs, x), (Vec{-2.5, -2.5, -2.5, -2.5}));
  EXPECT_EQ(kernels::ref::avgpool2d_fwd(pool(3, 3, 1, 1, 1, 1, true), xs, x),
            (Vec{-10 / 9.0, -10 / 9.0, -10 / 9.0, -10 / 9.0}));
}

TEST(Pool, OutputShape) {
  EXPECT_EQ(kernels::pool2d_output_shape(pool(3, 3, 2, 2, 1, 1), {32, 112, 112, 64}), (Shape{32, 56, 56, 64}));
  EXPECT_EQ(kernels::pool2d_output_shape(Pool2dParams{}, {3, 5, 7, 5}), (Shape{3, 2, 3, 5}));
  EXPECT_EQ(kernels::pool2d_output_shape(pool(2, 3, 1, 2, 1, 0), {3, 5, 7, 5}), (Shape{3, 6, 3, 5}));
}

void check_pool_host(const Shape& xs, const Pool2dParams& p, std::uint64_t seed, double quantum) {
  SCOPED_TRACE(shape_str(xs) + " " + name(p));
  Tensor x = test::random_tensor(xs, seed);
  if (quantum > 0) {
    // Few distinct values: many ties, so the first-maximum rule is exercised.
    float* v = x.data_as<float>();
    for (std::int64_t i = 0; i < x.numel(); ++i) v[i] = std::round(v[i] / quantum) * quantum;
  }
  const Shape ys = kernels::pool2d_output_shape(p, xs);
  const Tensor dy = test::random_tensor(ys, seed + 1);
  const Vec xv = test::to_double(x), dyv = test::to_double(dy);
  Tensor y = Tensor::empty(ys, DType::F32), dx = test::random_tensor(xs, seed + 2);
  kernels::maxpool2d_fwd(p, x, y);
  EXPECT_LT(test::max_rel_error(y, kernels::ref::maxpool2d_fwd(p, xs, xv)), 1e-6);
  kernels::maxpool2d_bwd(p, x, y, dy, dx);
  EXPECT_LT(test::max_rel_error(dx, kernels::ref::maxpool2d_bwd(p, xs, xv, dyv)), 1e-6);
  kernels::avgpool2d_fwd(p, x, y);
  EXPECT_LT(test::max_rel_error(y, kernels::ref::avgpool2d_fwd(p, xs, xv)), 1e-5);
  kernels::avgpool2d_bwd(p, dy, dx);
  EXPECT_LT(test::max_rel_error(dx, kernels::ref::avgpool2d_bwd(p, xs, dyv)), 1e-5);
}

TEST(PoolHost, MatchesReference) {
  std::uint64_t seed = 10;
  for (const auto& p : spread()) {
    check_pool_host({3, 5, 7, 5}, p, seed += 3, 0.0);
    check_pool_host({2, 9, 8, 70}, p, seed += 3, 0.0);
  }
}

TEST(PoolHost, TiesGoToTheFirstMaximum) {
  std::uint64_t seed = 200;
  for (const auto& p : spread()) check_pool_host({3, 5, 7, 5}, p, seed += 3, 0.5);
  // By hand: a 2x2 window of equal values sends the gradient to its top-left element.
  Tensor x = Tensor::from_vector({1, 2, 2, 1}, {1, 1, 1, 1}), y = Tensor::empty({1, 1, 1, 1}, DType::F32);
  Tensor dy = Tensor::from_vector({1, 1, 1, 1}, {3}), dx = Tensor::empty({1, 2, 2, 1}, DType::F32);
  kernels::maxpool2d_fwd(Pool2dParams{}, x, y);
  kernels::maxpool2d_bwd(Pool2dParams{}, x, y, dy, dx);
  EXPECT_EQ(dx.to_float_vector(), (std::vector<float>{3, 0, 0, 0}));
}

TEST(PoolHost, LargeImagesMatchReference) {
  // Enough work for the OpenMP paths (threads over rows, images and channel blocks).
  check_pool_host({4, 16, 15, 67}, pool(3, 3, 2, 2, 1, 1), 300, 0.0);
}

TEST(PoolHost, Bf16MatchesReference) {
  const Shape xs{3, 5, 7, 5};
  const auto p = pool(3, 3, 2, 2, 1, 1);
  const Tensor x = kernels::cast(test::random_tensor(xs, 400), DType::BF16);
  const Shape ys = kernels::pool2d_output_shape(p, xs);
  const Tensor dy = kernels::cast(test::random_tensor(ys, 401), DType::BF16);
  Tensor y = Tensor::empty(ys, DType::BF16), dx = Tensor::empty(xs, DType::BF16);
  kernels::maxpool2d_fwd(p, x, y);
  EXPECT_LT(test::max_rel_error(y, kernels::ref::maxpool2d_fwd(p, xs, test::to_double(x))), 1e-6);
  kernels::maxpool2d_bwd(p, x, y, dy, dx);
  EXPECT_LT(test::max_rel_error(dx, kernels::ref::maxpool2d_bwd(p, xs, test::to_double(x), test::to_double(dy))), 1e-2);
  kernels::avgpool2d_fwd(p, x, y);
  EXPECT_LT(test::max_rel_error(y, kernels::ref::avgpool2d_fwd(p, xs, test::to_double(x))), 1e-2);
}

// The CUDA backend's per-element kernels (backward as a gather over windows) run here on the host,
// so that their window arithmetic is tested on machines without a GPU.
TEST(PoolFunctors, CudaGatherKernelsMatchReference) {
  std::uint64_t seed = 700;
  for (const auto& p : spread())
    for (double quantum : {0.0, 0.5}) {
      const Shape xs{2, 7, 6, 3};
      SCOPED_TRACE(name(p) + (quantum > 0 ? " ties" : ""));
      Tensor x = test::random_tensor(xs, seed += 3);
      float* v = x.data_as<float>();
      if (quantum > 0)
        for (std::int64_t i = 0; i < x.numel(); ++i) v[i] = std::round(v[i] / quantum) * quantum;
      const Shape ys = kernels::pool2d_output_shape(p, xs);
      const Tensor dy = test::random_tensor(ys, seed + 1);
      const kernels::PoolGeom g = kernels::pool_geom(p, xs);
      Tensor y = Tensor::empty(ys, DType::F32), dx = Tensor::empty(xs, DType::F32);
      const Vec xv = test::to_double(x), dyv = test::to_double(dy);
      for (bool avg : {false, true}) {
        const kernels::Pool2dFwdFunctor<float> fwd{g, x.data_as<float>(), y.data_as<float>(), avg};
        kernels::parallel_for_host(y.numel(), fwd);
        const kernels::Pool2dBwdFunctor<float> bwd{g, x.data_as<float>(), dy.data_as<float>(), dx.data_as<float>(),
                                                   avg};
        kernels::parallel_for_host(dx.numel(), bwd);
        if (avg) {
          EXPECT_LT(test::max_rel_error(y, kernels::ref::avgpool2d_fwd(p, xs, xv)), 1e-5);
          EXPECT_LT(test::max_rel_error(dx, kernels::ref::avgpool2d_bwd(p, xs, dyv)), 1e-5);
        } else {
          EXPECT_LT(test::max_rel_error(y, kernels::ref::maxpool2d_fwd(p, xs, xv)), 1e-6);
          EXPECT_LT(test::max_rel_error(dx, kernels::ref::maxpool2d_bwd(p, xs, xv, dyv)), 1e-6);
        }
      }
    }
  // Global average pooling backward, both modes.
  const Tensor dy = test::random_tensor({2, 3}, 800);
  Tensor dx = test::random_tensor({2, 4, 5, 3}, 801);
  Vec expect = test::to_double(dx);
  const Vec ref = kernels::ref::global_avgpool_bwd({2, 4, 5, 3}, test::to_double(dy));
  for (std::size_t i = 0; i < expect.size(); ++i) expect[i] += ref[i];
  const kernels::GlobalAvgPoolBwdFunctor<float> f{dy.data_as<float>(), dx.data_as<float>(), 20, 3, 1.0f / 20, true};
  kernels::parallel_for_host(dx.numel(), f);
  EXPECT_LT(test::max_rel_error(dx, expect), 1e-6);
}

TEST(GlobalAvgPoolHost, MatchesReferenceInBothModes) {
  for (const Shape& xs : {Shape{3, 5, 7, 5}, Shape{2, 9, 11, 70}, Shape{4, 1, 1, 3}}) {
    SCOPED_TRACE(shape_str(xs));
    const Tensor x = test::random_tensor(xs, 500);
    Tensor y = Tensor::empty({xs[0], xs[3]}, DType::F32);
    kernels::global_avgpool_fwd(x, y);
    EXPECT_LT(test::max_rel_error(y, kernels::ref::global_avgpool_fwd(xs, test::to_double(x))), 1e-5);
    const Tensor dy = test::random_tensor({xs[0], xs[3]}, 501);
    const Vec ref = kernels::ref::global_avgpool_bwd(xs, test::to_double(dy));
    Tensor dx = test::random_tensor(xs, 502);
    Vec acc = test::to_double(dx);
    for (std::size_t i = 0; i < acc.size(); ++i) acc[i] += ref[i];
    kernels::global_avgpool_bwd(dy, dx, GradMode::Accumulate);
    EXPECT_LT(test::max_rel_error(dx, acc), 1e-5);
    kernels::global_avgpool_bwd(dy, dx, GradMode::Overwrite);
    EXPECT_LT(test::max_rel_error(dx, ref), 1e-5);
  }
}

TEST(PoolHost, RejectsBadShapesAndParams) {
  const Tensor x = test::random_tensor({3, 5, 7, 5}, 600);
  Tensor y_bad = Tensor::empty({3, 3, 3, 5}, DType::F32);
  std::string msg = error_of([&] { kernels::maxpool2d_fwd(Pool2dParams{}, x, y_bad); });
  EXPECT_NE(msg.find("maxpool2d_fwd"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3,2,3,5]"), std::string::npos) << msg;
  Tensor y = Tensor::empty({3, 2, 3, 5}, DType::F32);
  const Tensor x3 = test::random_tensor({5, 7, 5}, 601);
  EXPECT_THROW(kernels::avgpool2d_fwd(Pool2dParams{}, x3, y), Error);
  msg = error_of([&] { kernels::maxpool2d_fwd(pool(2, 2, 2, 2, 2, 0), x, y); });
  EXPECT_NE(msg.find("padding"), std::string::npos) << msg;
  EXPECT_THROW(kernels::maxpool2d_fwd(pool(2, 2, 0, 2, 0, 0), x, y), Error);
  EXPECT_THROW(kernels::maxpool2d_fwd(pool(9, 2, 2, 2, 0, 0), x, y), Error);
  Tensor y_bf = Tensor::empty({3, 2, 3, 5}, DType::BF16);
  EXPECT_THROW(kernels::maxpool2d_fwd(Pool2dParams{}, x, y_bf), Error);
  Tensor dx = Tensor::empty({3, 5, 7, 5}, DType::F32);
  EXPECT_THROW(kernels::avgpool2d_bwd(Pool2dParams{}, y_bad, dx), Error);
  EXPECT_THROW(kernels::maxpool2d_bwd(Pool2dParams{}, x, y, y_bad, dx), Error);
  Tensor g_bad = Tensor::empty({3, 4}, DType::F32);
  msg = error_of([&] { kernels::global_avgpool_fwd(x, g_bad); });
  EXPECT_NE(msg.find("global_avgpool_fwd"), std::string::npos) << msg;
  EXPECT_THROW(kernels::global_avgpool_bwd(g_bad, dx, GradMode::Overwrite), Error);
}

}  // namespace
}  // namespace gppf
