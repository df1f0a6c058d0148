#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/linear.hpp"
#include "kernels/ref/linear.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::GradMode;
using kernels::ref::LinearDims;
using Vec = std::vector<double>;

constexpr double kTol = 1e-4;

Vec plus(const Vec& a, const Vec& b) {
  Vec y(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) y[i] = a[i] + b[i];
  return y;
}

TEST(LinearRef, BackwardMatchesFiniteDifferences) {
  const LinearDims d{3, 5, 4};
  const Vec x = test::random_vector(15, 1), w = test::random_vector(20, 2), bias = test::random_vector(4, 3),
            r = test::random_vector(12, 4);
  auto loss = [&](const Vec& xx, const Vec& ww, const Vec& bb) {
    const Vec y = kernels::ref::linear_fwd(d, xx, ww, bb);
    double s = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * r[i];
    return s;
  };
  Vec dw, dbias;
  kernels::ref::linear_bwd_weight(d, x, r, dw, dbias);
  const auto rx =
      test::check_gradient([&](const Vec& v) { return loss(v, w, bias); }, x, kernels::ref::linear_bwd_data(d, r, w));
  const auto rw = test::check_gradient([&](const Vec& v) { return loss(x, v, bias); }, w, dw);
  const auto rb = test::check_gradient([&](const Vec& v) { return loss(x, w, v); }, bias, dbias);
  EXPECT_TRUE(rx.ok) << rx.message();
  EXPECT_TRUE(rw.ok) << rw.message();
  EXPECT_TRUE(rb.ok) << rb.message();
  EXPECT_EQ(rw.checked, 20u);
}

TEST(Linear, HostMatchesReferenceForwardAndBackwardBothModes) {
  std::uint64_t seed = 10;
  for (const LinearDims d :
       {LinearDims{1, 1, 1}, LinearDims{7, 13, 5}, LinearDims{33, 65, 17}, LinearDims{130, 27, 129}}) {
    for (const bool with_bias : {true, false}) {
      const Tensor x = test::random_tensor({d.n, d.in}, ++seed), w = test::random_tensor({d.out, d.in}, ++seed);
      const Tensor bias = with_bias ? test::random_tensor({d.out}, ++seed) : Tensor();
      const Tensor dy = test::random_tensor({d.n, d.out}, ++seed);
      const Vec vx = test::to_double(x), vw = test::to_double(w), vdy = test::to_double(dy);
      const std::string what = str("n=", d.n, " in=", d.in, " out=", d.out, " bias=", with_bias);

      Tensor y = Tensor::empty({d.n, d.out}, DType::F32);
      y.fill_(std::numeric_limits<float>::quiet_NaN());  // overwritten, never read
      kernels::linear_fwd(x, w, bias, y);
      EXPECT_LT(test::max_rel_error(y, kernels::ref::linear_fwd(d, vx, vw, with_bias ? test::to_double(bias) : Vec{})),
                kTol)
          << what;

      const Vec ref_dx = kernels::ref::linear_bwd_data(d, vdy, vw);
      Vec ref_dw, ref_db;
      kernels::ref::linear_bwd_weight(d, vx, vdy, ref_dw, ref_db);

      Tensor dx = test::random_tensor({d.n, d.in}, ++seed), dw = test::random_tensor({d.out, d.in}, ++seed),
             db = test::random_tensor({d.out}, ++seed);
      const Vec old_dx = test::to_double(dx), old_dw = test::to_double(dw), old_db = test::to_double(db);
      kernels::linear_bwd_data(dy, w, dx, GradMode::Accumulate);
      kernels::linear_bwd_weight(x, dy, dw, with_bias ? &db : nullptr, GradMode::Accumulate);
      EXPECT_LT(test::max_rel_error(dx, plus(old_dx, ref_dx)), kTol) << what;
      EXPECT_LT(test::max_rel_error(dw, plus(old_dw, ref_dw)), kTol) << what;
      if (with_bias) {
        EXPECT_LT(test::max_rel_error(db, plus(old_db, ref_db)), kTol) << what;
      }

      dx.fill_(std::numeric_limits<float>::quiet_NaN());
      dw.fill_(std::numeric_limits<float>::quiet_NaN());
      db.fill_(std::numeric_limits<float>::quiet_NaN());
      kernels::linear_bwd_data(dy, w, dx, GradMode::Overwrite);
      kernels::linear_bwd_weight(x, dy, dw, with_bias ? &db : nullptr, GradMode::Overwrite);
      EXPECT_LT(test::max_rel_error(dx, ref_dx), kTol) << what;
      EXPECT_LT(test::max_rel_error(dw, ref_dw), kTol) << what;
      if (with_bias) {
        EXPECT_LT(test::max_rel_error(db, ref_db), kTol) << what;
      }
    }
  }
}

TEST(Linear, LeadingDimsAreFlattened) {
  const Tensor x = test::random_tensor({2, 3, 5, 7}, 20), w = test::random_tensor({4, 7}, 21),
               bias = test::random_tensor({4}, 22);
  Tensor y = Tensor::empty({2, 3, 5, 4}, DType::F32);
  kernels::linear_fwd(x, w, bias, y);
  const Vec expect =
      kernels::ref::linear_fwd({30, 7, 4}, test::to_double(x), test::to_double(w), test::to_double(bias));
  EXPECT_LT(test::max_rel_error(y, expect), kTol);
}

TEST(Gemm, AllTranspositionsMatchReference) {
  const std::int64_t m = 19, n = 23, k = 11;
  std::uint64_t seed = 30;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const auto& [alpha, beta] : {std::pair{1.0f, 0.0f}, std::pair{-0.5f, 1.0f}, std::pair{2.0f, 0.25f}}) {
        const Tensor a = test::random_tensor(ta ? Shape{k, m} : Shape{m, k}, ++seed);
        const Tensor b = test::random_tensor(tb ? Shape{n, k} : Shape{k, n}, ++seed);
        Tensor c = test::random_tensor({m, n}, ++seed);
        const Vec c0 = test::to_double(c);
        if (beta == 0.0f) c.fill_(std::numeric_limits<float>::quiet_NaN());
        kernels::gemm(ta, tb, alpha, a, b, beta, c);
        const Vec expect =
            kernels::ref::gemm({ta, tb, m, n, k}, alpha, test::to_double(a), test::to_double(b), beta, c0);
        EXPECT_LT(test::max_rel_error(c, expect), kTol) << "ta=" << ta << " tb=" << tb << " beta=" << beta;
      }
}

TEST(Gemm, EmptyInnerDimensionScalesC) {
  const Tensor a = Tensor::zeros({3, 0}, DType::F32), b = Tensor::zeros({0, 4}, DType::F32);
  Tensor c = Tensor::from_vector({3, 4}, std::vector<float>(12, 2.0f));
  kernels::gemm(false, false, 1.0f, a, b, 0.5f, c);
  EXPECT_LT(test::max_rel_error(c, Vec(12, 1.0)), kTol);
  kernels::gemm(false, false, 1.0f, a, b, 0.0f, c);
  EXPECT_LT(test::max_rel_error(c, Vec(12, 0.0)), kTol);
}

TEST(Linear, ShapeErrorsNameTheOpAndShapes) {
  const Tensor x = Tensor::zeros({4, 5}, DType::F32), w = Tensor::zeros({3, 6}, DType::F32);
  Tensor y = Tensor::zeros({4, 3}, DType::F32);
  try {
    kernels::linear_fwd(x, w, Tensor(), y);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("linear_fwd"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[3,6]"), std::string::npos) << msg;
  }
  const Tensor w_ok = Tensor::zeros({3, 5}, DType::F32);
  Tensor dw_bad = Tensor::zeros({5, 3}, DType::F32), bias_bad = Tensor::zeros({4}, DType::F32);
  EXPECT_THROW(kernels::linear_fwd(x, w_ok, bias_bad, y), Error);
  EXPECT_THROW(kernels::linear_bwd_weight(x, y, dw_bad, nullptr, GradMode::Overwrite), Error);
  Tensor dx_bad = Tensor::zeros({4, 4}, DType::F32);
  EXPECT_THROW(kernels::linear_bwd_data(y, w_ok, dx_bad, GradMode::Overwrite), Error);
  Tensor c = Tensor::zeros({4, 4}, DType::F32);
  try {
    kernels::gemm(false, false, 1.0f, x, x, 0.0f, c);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gemm"), std::string::npos) << e.what();
  }
  Tensor i32 = Tensor::zeros({4, 3}, DType::I32);
  EXPECT_THROW(kernels::linear_fwd(x, w_ok, Tensor(), i32), Error);
}

}  // namespace
}  // namespace gppf
