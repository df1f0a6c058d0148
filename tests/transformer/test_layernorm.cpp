#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/cast.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/ref/layernorm.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"
#include "tests/transformer/helpers.hpp"

namespace gppf {
namespace {

using kernels::GradMode;
using kernels::LayerNormParams;
using Vec = std::vector<double>;

Vec ref_y(const LayerNormParams& p, std::int64_t d, const Vec& x, const Vec& gamma, const Vec& beta) {
  Vec y, mean, invstd;
  kernels::ref::layernorm_fwd(p, d, x, gamma, beta, y, mean, invstd);
  return y;
}

TEST(LayerNormRef, BackwardMatchesFiniteDifferences) {
  LayerNormParams p;
  p.eps = 1e-3f;
  const std::int64_t rows = 5, d = 6;
  const Vec x = test::random_vector(rows * d, 1, -2.0, 3.0);
  const Vec gamma = test::random_vector(d, 2, 0.5, 1.5), beta = test::random_vector(d, 3, -0.3, 0.3);
  const Vec w = test::random_vector(rows * d, 4);
  Vec y, mean, invstd, dx, dgamma, dbeta;
  kernels::ref::layernorm_fwd(p, d, x, gamma, beta, y, mean, invstd);
  kernels::ref::layernorm_bwd(d, x, w, gamma, mean, invstd, dx, dgamma, dbeta);
  test::GradCheckOptions o;
  o.step = 1e-6;
  const auto rx =
      test::check_gradient([&](const Vec& v) { return test::dot(w, ref_y(p, d, v, gamma, beta)); }, x, dx, o);
  const auto rg =
      test::check_gradient([&](const Vec& v) { return test::dot(w, ref_y(p, d, x, v, beta)); }, gamma, dgamma, o);
  const auto rb =
      test::check_gradient([&](const Vec& v) { return test::dot(w, ref_y(p, d, x, gamma, v)); }, beta, dbeta, o);
  EXPECT_TRUE(rx.ok) << "dx " << rx.message();
  EXPECT_TRUE(rg.ok) << "dgamma " << rg.message();
  EXPECT_TRUE(rb.ok) << "dbeta " << rb.message();
  EXPECT_EQ(rx.checked, x.size());
}

TEST(LayerNormRef, GradCheckCatchesAWrongDx) {
  const LayerNormParams p;
  const std::int64_t d = 4;
  const Vec x = test::random_vector(12, 5), gamma = {1.2, 0.7, 1.0, 0.9}, beta = {0.1, -0.2, 0.0, 0.3};
  const Vec w = test::random_vector(12, 6);
  Vec y, mean, invstd, dx, dg, db;
  kernels::ref::layernorm_fwd(p, d, x, gamma, beta, y, mean, invstd);
  kernels::ref::layernorm_bwd(d, x, w, gamma, mean, invstd, dx, dg, db);
  dx[5] *= 1.001;
  EXPECT_FALSE(test::check_gradient([&](const Vec& v) { return test::dot(w, ref_y(p, d, v, gamma, beta)); }, x, dx).ok);
}

TEST(LayerNormRef, ByHand) {
  // Row 1, 2, 3, 4: mean 2.5, biased var 1.25.
  Vec y, mean, invstd;
  kernels::ref::layernorm_fwd(LayerNormParams{0.0f}, 4, {1, 2, 3, 4}, {1, 1, 1, 2}, {0, 0, 0, 1}, y, mean, invstd);
  EXPECT_DOUBLE_EQ(mean[0], 2.5);
  EXPECT_DOUBLE_EQ(invstd[0], 1.0 / std::sqrt(1.25));
  EXPECT_DOUBLE_EQ(y[0], -1.5 / std::sqrt(1.25));
  EXPECT_DOUBLE_EQ(y[3], 2.0 * 1.5 / std::sqrt(1.25) + 1.0);
}

struct Case {
  Tensor x, gamma, beta, dy;
};

Case make_case(const Shape& shape, std::uint64_t seed, double lo, double hi, DType dtype) {
  const std::int64_t d = shape.back();
  return {kernels::cast(test::random_tensor(shape, seed, lo, hi), dtype), test::random_tensor({d}, seed + 1, 0.5, 1.5),
          test::random_tensor({d}, seed + 2, -0.5, 0.5), kernels::cast(test::random_tensor(shape, seed + 3), dtype)};
}

// Host forward and backward against the reference (on the same, possibly bf16-rounded, inputs), both
// gradient modes. Statistics are [rows] or x's leading dims as the caller likes.
void check_host(const Shape& shape, DType dtype, std::uint64_t seed, double lo = -2.0, double hi = 3.0) {
  SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dtype) + " x in [" + std::to_string(lo) + ", " + std::to_string(hi) +
               ")");
  const double tol = dtype == DType::F32 ? 1e-4 : 1e-2, stat_tol = dtype == DType::F32 ? 1e-4 : 1e-3;
  const std::int64_t d = shape.back(), rows = shape_numel(shape) / d;
  LayerNormParams p;
  p.eps = 1e-6f;
  const Case c = make_case(shape, seed, lo, hi, dtype);
  const Vec x = test::to_double(c.x), gamma = test::to_double(c.gamma), beta = test::to_double(c.beta);
  Vec y, mean, invstd;
  kernels::ref::layernorm_fwd(p, d, x, gamma, beta, y, mean, invstd);
  const Shape lead(shape.begin(), shape.end() - 1);
  Tensor ty = Tensor::empty(shape, dtype), tm = Tensor::empty(lead, DType::F32), ti = Tensor::empty({rows}, DType::F32);
  kernels::layernorm_fwd(p, c.x, c.gamma, c.beta, ty, tm, ti);
  EXPECT_LT(test::max_rel_error(ty, y), tol);
  EXPECT_LT(test::max_rel_error(tm, mean), stat_tol);
  EXPECT_LT(test::max_rel_error(ti, invstd), stat_tol);

  Vec dx, dg, db;
  kernels::ref::layernorm_bwd(d, x, test::to_double(c.dy), gamma, test::to_double(tm), test::to_double(ti), dx, dg, db);
  Tensor tdx = Tensor::empty(shape, dtype), tdg = test::random_tensor({d}, seed + 4),
         tdb = test::random_tensor({d}, seed + 5);
  const Vec dg0 = test::to_double(tdg), db0 = test::to_double(tdb);
  kernels::layernorm_bwd(c.x, c.dy, c.gamma, tm, ti, tdx, tdg, tdb, GradMode::Overwrite);
  EXPECT_LT(test::max_rel_error(tdx, dx), tol);
  EXPECT_LT(test::max_rel_error(tdg, dg), stat_tol);
  EXPECT_LT(test::max_rel_error(tdb, db), stat_tol);
  tdg.copy_from(Tensor::from_vector({d}, test::to_float(dg0)));
  tdb.copy_from(Tensor::from_vector({d}, test::to_float(db0)));
  kernels::layernorm_bwd(c.x, c.dy, c.gamma, tm, ti, tdx, tdg, tdb, GradMode::Accumulate);
  EXPECT_LT(test::max_rel_error(tdg, test::plus(dg0, dg)), stat_tol);
  EXPECT_LT(test::max_rel_error(tdb, test::plus(db0, db)), stat_tol);
}

TEST(LayerNormHost, MatchesReference) {
  std::uint64_t seed = 100;
  // One row and many; D below, at and above a warp's 32 lanes; a ViT-B width; rows in several
  // backward row blocks (32 rows) with a partial last one.
  for (const Shape& shape :
       {Shape{1, 5}, Shape{2, 3, 8}, Shape{7, 3}, Shape{4, 37}, Shape{3, 7, 70}, Shape{2, 3, 768}, Shape{2, 97, 24}})
    check_host(shape, DType::F32, seed += 10);
}

TEST(LayerNormHost, LargeMeanMatchesReference) {
  // |mean| >> std: the two-pass statistics keep the variance free of cancellation.
  check_host({6, 50}, DType::F32, 7, 100.0, 101.0);
}

TEST(LayerNormHost, Bf16MatchesReference) {
  check_host({3, 5, 40}, DType::BF16, 70);
  check_host({2, 97, 24}, DType::BF16, 80);
}

TEST(LayerNormHost, SameBitsForAnyThreadCount) {
  const Shape shape{8, 41, 48};
  const Case c = make_case(shape, 90, -1.0, 2.0, DType::F32);
  const int saved = omp_get_max_threads();
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    Tensor y = Tensor::empty(shape, DType::F32), m = Tensor::empty({8, 41}, DType::F32),
           is = Tensor::empty({8, 41}, DType::F32), dx = Tensor::empty(shape, DType::F32),
           dg = Tensor::empty({48}, DType::F32), db = Tensor::empty({48}, DType::F32);
    kernels::layernorm_fwd(LayerNormParams{}, c.x, c.gamma, c.beta, y, m, is);
    kernels::layernorm_bwd(c.x, c.dy, c.gamma, m, is, dx, dg, db, GradMode::Overwrite);
    std::vector<float> all;
    for (const Tensor* t : {&y, &m, &is, &dx, &dg, &db}) {
      const auto v = t->to_float_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
    outs.push_back(all);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(outs[0], outs[1]);
  EXPECT_EQ(outs[0], outs[2]);
}

TEST(LayerNormHost, CountsTheCudaLaunches) {
  const Case c = make_case({4, 16}, 95, -1.0, 1.0, DType::F32);
  Tensor y = Tensor::empty({4, 16}, DType::F32), m = Tensor::empty({4}, DType::F32),
         is = Tensor::empty({4}, DType::F32), dx = Tensor::empty({4, 16}, DType::F32),
         dg = Tensor::empty({16}, DType::F32), db = Tensor::empty({16}, DType::F32);
  EXPECT_EQ(test::launches_of([&] { kernels::layernorm_fwd(LayerNormParams{}, c.x, c.gamma, c.beta, y, m, is); }), 1);
  EXPECT_EQ(
      test::launches_of([&] { kernels::layernorm_bwd(c.x, c.dy, c.gamma, m, is, dx, dg, db, GradMode::Accumulate); }),
      3);
}

TEST(LayerNormHost, RejectsBadArguments) {
  const Case c = make_case({2, 3, 4}, 99, -1.0, 1.0, DType::F32);
  Tensor y = Tensor::empty({2, 3, 4}, DType::F32), m = Tensor::empty({2, 3}, DType::F32),
         is = Tensor::empty({6}, DType::F32), dg = Tensor::empty({4}, DType::F32), db = Tensor::empty({4}, DType::F32);
  const LayerNormParams p;
  const Tensor bad_gamma = Tensor::zeros({3}, DType::F32);
  test::expect_error_names([&] { kernels::layernorm_fwd(p, c.x, bad_gamma, c.beta, y, m, is); }, "layernorm_fwd",
                           "gamma");
  Tensor bad_y = Tensor::empty({2, 3, 4}, DType::BF16);
  test::expect_error_names([&] { kernels::layernorm_fwd(p, c.x, c.gamma, c.beta, bad_y, m, is); }, "layernorm_fwd",
                           "y");
  Tensor bad_m = Tensor::empty({3, 2}, DType::F32);
  test::expect_error_names([&] { kernels::layernorm_fwd(p, c.x, c.gamma, c.beta, y, bad_m, is); }, "layernorm_fwd",
                           "save_mean");
  const Tensor ints = Tensor::zeros({2, 4}, DType::I32);
  test::expect_error_names([&] { kernels::layernorm_fwd(p, ints, c.gamma, c.beta, y, m, is); }, "layernorm_fwd", "x");
  const Tensor empty = Tensor::zeros({0, 4}, DType::F32);
  test::expect_error_names([&] { kernels::layernorm_fwd(p, empty, c.gamma, c.beta, y, m, is); }, "layernorm_fwd",
                           "empty");
  test::expect_error_names([&] { kernels::layernorm_fwd(LayerNormParams{0.0f}, c.x, c.gamma, c.beta, y, m, is); },
                           "layernorm_fwd", "eps");
  Tensor dx = Tensor::empty({2, 3, 4}, DType::F32), bad_db = Tensor::empty({4}, DType::BF16);
  test::expect_error_names(
      [&] { kernels::layernorm_bwd(c.x, c.dy, c.gamma, m, is, dx, dg, bad_db, GradMode::Overwrite); }, "layernorm_bwd",
      "dbeta");
  Tensor bad_dx = Tensor::empty({2, 4, 3}, DType::F32);
  test::expect_error_names(
      [&] { kernels::layernorm_bwd(c.x, c.dy, c.gamma, m, is, bad_dx, dg, db, GradMode::Overwrite); }, "layernorm_bwd",
      "dx");
}

}  // namespace
}  // namespace gppf
