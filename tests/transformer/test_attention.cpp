#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kernels/attention.hpp"
#include "kernels/cast.hpp"
#include "kernels/ref/attention.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"
#include "tests/transformer/helpers.hpp"

namespace gppf {
namespace {

using kernels::BmmParams;
using kernels::BmmShape;
using kernels::GradMode;
using kernels::SdpaParams;
using kernels::SdpaShape;
using Vec = std::vector<double>;

Tensor random_as(const Shape& shape, std::uint64_t seed, DType dtype, double lo = -1.0, double hi = 1.0) {
  return kernels::cast(test::random_tensor(shape, seed, lo, hi), dtype);
}

// ---- GELU

TEST(GeluRef, BackwardMatchesFiniteDifferences) {
  const Vec x = test::random_vector(40, 1, -4.0, 4.0), w = test::random_vector(40, 2);
  Vec dx;
  kernels::ref::gelu_bwd(x, w, dx);
  auto f = [&](const Vec& v) {
    Vec y;
    kernels::ref::gelu_fwd(v, y);
    return test::dot(w, y);
  };
  const auto r = test::check_gradient(f, x, dx);
  EXPECT_TRUE(r.ok) << r.message();
  dx[7] *= 1.001;
  EXPECT_FALSE(test::check_gradient(f, x, dx).ok);
}

TEST(GeluHost, ByHand) {
  // PyTorch: gelu(1) = 0.8413447, gelu(-1) = -0.1586553, gelu(0) = 0.
  const Tensor x = Tensor::from_vector({3}, {1.0f, -1.0f, 0.0f});
  Tensor y = Tensor::empty({3}, DType::F32);
  kernels::gelu_fwd(x, y);
  EXPECT_NEAR(y.data_as<float>()[0], 0.8413447460685429, 1e-6);
  EXPECT_NEAR(y.data_as<float>()[1], -0.15865525393145707, 1e-6);
  EXPECT_EQ(y.data_as<float>()[2], 0.0f);
}

void check_gelu(const Shape& shape, DType dtype, std::uint64_t seed) {
  SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dtype));
  const double tol = dtype == DType::F32 ? 1e-5 : 1e-2;
  const Tensor x = random_as(shape, seed, dtype, -6.0, 6.0), dy = random_as(shape, seed + 1, dtype);
  Vec y, dx;
  kernels::ref::gelu_fwd(test::to_double(x), y);
  kernels::ref::gelu_bwd(test::to_double(x), test::to_double(dy), dx);
  Tensor ty = Tensor::empty(shape, dtype), tdx = Tensor::empty(shape, dtype);
  kernels::gelu_fwd(x, ty);
  EXPECT_LT(test::max_rel_error(ty, y), tol);
  kernels::gelu_bwd(x, dy, tdx, GradMode::Overwrite);
  EXPECT_LT(test::max_rel_error(tdx, dx), tol);
  const Tensor dx0 = random_as(shape, seed + 2, dtype);
  tdx.copy_from(dx0);
  kernels::gelu_bwd(x, dy, tdx, GradMode::Accumulate);
  EXPECT_LT(test::max_rel_error(tdx, test::plus(test::to_double(dx0), dx)), 2 * tol);
}

TEST(GeluHost, MatchesReference) {
  check_gelu({3, 7}, DType::F32, 10);
  check_gelu({4, 50, 33}, DType::F32, 20);  // above the OpenMP threshold
  check_gelu({3, 7}, DType::BF16, 30);
  check_gelu({4, 50, 33}, DType::BF16, 40);
}

// ---- Softmax

TEST(SoftmaxRef, BackwardMatchesFiniteDifferences) {
  const std::int64_t cols = 5;
  const Vec x = test::random_vector(15, 3, -3.0, 3.0), w = test::random_vector(15, 4);
  Vec y, dx;
  kernels::ref::softmax_fwd(cols, x, y);
  kernels::ref::softmax_bwd(cols, y, w, dx);
  auto f = [&](const Vec& v) {
    Vec out;
    kernels::ref::softmax_fwd(cols, v, out);
    return test::dot(w, out);
  };
  test::GradCheckOptions o;
  o.step = 1e-6;
  const auto r = test::check_gradient(f, x, dx, o);
  EXPECT_TRUE(r.ok) << r.message();
}

void check_softmax(const Shape& shape, DType dtype, std::uint64_t seed, double lo, double hi) {
  SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dtype) + " x in [" + std::to_string(lo) + ", " + std::to_string(hi) +
               ")");
  const double tol = dtype == DType::F32 ? 1e-5 : 1e-2;
  const std::int64_t cols = shape.back();
  const Tensor x = random_as(shape, seed, dtype, lo, hi), dy = random_as(shape, seed + 1, dtype);
  Vec y, dx;
  kernels::ref::softmax_fwd(cols, test::to_double(x), y);
  Tensor ty = Tensor::empty(shape, dtype);
  kernels::softmax_fwd(x, ty);
  EXPECT_LT(test::max_rel_error(ty, y), tol);
  kernels::ref::softmax_bwd(cols, test::to_double(ty), test::to_double(dy), dx);
  Tensor tdx = Tensor::empty(shape, dtype);
  kernels::softmax_bwd(ty, dy, tdx);
  EXPECT_LT(test::max_rel_error(tdx, dx), tol);
  // In place: y over x, dx over dy.
  Tensor xy = x.clone(), g = dy.clone();
  kernels::softmax_fwd(xy, xy);
  EXPECT_EQ(xy.to_float_vector(), ty.to_float_vector());
  kernels::softmax_bwd(ty, g, g);
  EXPECT_EQ(g.to_float_vector(), tdx.to_float_vector());
}

TEST(SoftmaxHost, MatchesReference) {
  std::uint64_t seed = 50;
  for (DType dtype : {DType::F32, DType::BF16})
    for (const Shape& shape : {Shape{3, 7}, Shape{4, 1}, Shape{2, 5, 200}, Shape{300, 33}})
      check_softmax(shape, dtype, seed += 10, -4.0, 4.0);
}

TEST(SoftmaxHost, StableForLargeLogits) {
  // exp(1000) overflows f32; subtracting the row max keeps it finite.
  check_softmax({5, 9}, DType::F32, 60, 990.0, 1010.0);
  const Tensor x = Tensor::from_vector({1, 3}, {1000.0f, 1001.0f, 1002.0f});
  Tensor y = Tensor::empty({1, 3}, DType::F32);
  kernels::softmax_fwd(x, y);
  const double e1 = std::exp(-1.0), e2 = std::exp(-2.0), s = 1.0 + e1 + e2;
  EXPECT_NEAR(y.data_as<float>()[0], e2 / s, 1e-6);
  EXPECT_NEAR(y.data_as<float>()[2], 1.0 / s, 1e-6);
}

// ---- Batched matrix multiply

Shape matrix_shape(const Shape& lead, std::int64_t rows, std::int64_t cols) {
  Shape s = lead;
  s.push_back(rows);
  s.push_back(cols);
  return s;
}

void check_bmm(const Shape& lead, std::int64_t m, std::int64_t n, std::int64_t k, const BmmParams& p,
               std::uint64_t seed) {
  SCOPED_TRACE(shape_str(lead) + " m " + std::to_string(m) + " n " + std::to_string(n) + " k " + std::to_string(k) +
               (p.trans_a ? " A^T" : "") + (p.trans_b ? " B^T" : "") + " alpha " + std::to_string(p.alpha) + " beta " +
               std::to_string(p.beta));
  const Tensor a = test::random_tensor(p.trans_a ? matrix_shape(lead, k, m) : matrix_shape(lead, m, k), seed);
  const Tensor b = test::random_tensor(p.trans_b ? matrix_shape(lead, n, k) : matrix_shape(lead, k, n), seed + 1);
  Tensor c = test::random_tensor(matrix_shape(lead, m, n), seed + 2);
  Vec ref = test::to_double(c);
  kernels::ref::bmm({p.trans_a, p.trans_b, shape_numel(lead), m, n, k}, p.alpha, test::to_double(a), test::to_double(b),
                    p.beta, ref);
  kernels::bmm(p, a, b, c);
  EXPECT_LT(test::max_rel_error(c, ref), 1e-5);
}

TEST(BmmHost, MatchesReference) {
  std::uint64_t seed = 200;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_bmm({3}, 5, 7, 4, {ta, tb, 1.0f, 0.0f}, seed += 10);
      check_bmm({2, 3}, 6, 3, 9, {ta, tb, 0.5f, 2.0f}, seed += 10);
    }
  check_bmm({}, 4, 5, 6, {false, false, 1.0f, 1.0f}, seed += 10);     // no batch dims: one GEMM
  check_bmm({1}, 90, 70, 80, {true, false, 1.0f, 0.0f}, seed += 10);  // one GEMM, threaded by OpenBLAS
  check_bmm({40}, 9, 11, 13, {false, true, 1.0f, 0.0f}, seed += 10);  // GEMMs in parallel over the batch
}

TEST(BmmHost, BetaZeroIgnoresNaN) {
  const Tensor a = test::random_tensor({2, 3, 4}, 1), b = test::random_tensor({2, 4, 5}, 2);
  Tensor c = Tensor::from_vector({2, 3, 5}, std::vector<float>(30, NAN));
  kernels::bmm({}, a, b, c);
  Vec ref;
  kernels::ref::bmm({false, false, 2, 3, 5, 4}, 1.0, test::to_double(a), test::to_double(b), 0.0, ref);
  EXPECT_LT(test::max_rel_error(c, ref), 1e-5);
}

TEST(BmmHost, EmptyInnerDimScalesC) {
  const Tensor a = Tensor::zeros({2, 3, 0}, DType::F32), b = Tensor::zeros({2, 0, 4}, DType::F32);
  Tensor c = Tensor::from_vector({2, 3, 4}, std::vector<float>(24, 2.0f));
  kernels::bmm({false, false, 1.0f, 0.5f}, a, b, c);
  EXPECT_EQ(c.to_float_vector(), std::vector<float>(24, 1.0f));
  kernels::bmm({}, a, b, c);
  EXPECT_EQ(c.to_float_vector(), std::vector<float>(24, 0.0f));
}

TEST(BmmHost, RejectsBadArguments) {
  const Tensor a = test::random_tensor({2, 3, 4}, 1), b = test::random_tensor({2, 4, 5}, 2);
  Tensor c = Tensor::empty({2, 3, 5}, DType::F32);
  const Tensor b_batch = test::random_tensor({3, 4, 5}, 3), b_inner = test::random_tensor({2, 5, 5}, 4);
  test::expect_error_names([&] { kernels::bmm({}, a, b_batch, c); }, "bmm", "batch");
  test::expect_error_names([&] { kernels::bmm({}, a, b_inner, c); }, "bmm", "inner");
  Tensor c_bad = Tensor::empty({2, 5, 3}, DType::F32);
  test::expect_error_names([&] { kernels::bmm({}, a, b, c_bad); }, "bmm", "C");
  const Tensor a16 = kernels::cast(a, DType::BF16), b16 = kernels::cast(b, DType::BF16);
  test::expect_error_names([&] { kernels::bmm({}, a16, b16, c); }, "bmm", "f32 on the host");
}

// ---- Scaled dot-product attention

struct Attn {
  Tensor q, k, v;
};

Attn make_attn(std::int64_t n, std::int64_t h, std::int64_t tq, std::int64_t tk, std::int64_t dh, std::int64_t dv,
               std::uint64_t seed, DType dtype = DType::F32) {
  return {random_as({n, h, tq, dh}, seed, dtype, -2.0, 2.0), random_as({n, h, tk, dh}, seed + 1, dtype, -2.0, 2.0),
          random_as({n, h, tk, dv}, seed + 2, dtype)};
}

TEST(SdpaRef, BackwardMatchesFiniteDifferences) {
  const SdpaShape g{2, 3, 4, 3, 2, 0.7f};
  const Vec q = test::random_vector(2 * 3 * 3, 1, -1.5, 1.5), k = test::random_vector(2 * 4 * 3, 2, -1.5, 1.5),
            v = test::random_vector(2 * 4 * 2, 3), w = test::random_vector(2 * 3 * 2, 4);
  Vec out, probs, dq, dk, dv;
  kernels::ref::sdpa_fwd(g, q, k, v, out, probs);
  kernels::ref::sdpa_bwd(g, q, k, v, probs, w, dq, dk, dv);
  auto loss = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
    Vec o, pr;
    kernels::ref::sdpa_fwd(g, qq, kk, vv, o, pr);
    return test::dot(w, o);
  };
  test::GradCheckOptions o;
  o.step = 1e-6;
  const auto rq = test::check_gradient([&](const Vec& x) { return loss(x, k, v); }, q, dq, o);
  const auto rk = test::check_gradient([&](const Vec& x) { return loss(q, x, v); }, k, dk, o);
  const auto rv = test::check_gradient([&](const Vec& x) { return loss(q, k, x); }, v, dv, o);
  EXPECT_TRUE(rq.ok) << "dq " << rq.message();
  EXPECT_TRUE(rk.ok) << "dk " << rk.message();
  EXPECT_TRUE(rv.ok) << "dv " << rv.message();
}

void check_sdpa(std::int64_t n, std::int64_t h, std::int64_t tq, std::int64_t tk, std::int64_t dh, std::int64_t dv,
                float scale, std::uint64_t seed) {
  SCOPED_TRACE("N " + std::to_string(n) + " H " + std::to_string(h) + " Tq " + std::to_string(tq) + " Tk " +
               std::to_string(tk) + " Dh " + std::to_string(dh) + " Dv " + std::to_string(dv) + " scale " +
               std::to_string(scale));
  const Attn a = make_attn(n, h, tq, tk, dh, dv, seed);
  const SdpaParams p{scale};
  const SdpaShape g{n * h, tq, tk, dh, dv, kernels::sdpa_scale(p, dh)};
  if (scale == 0.0f) {
    EXPECT_FLOAT_EQ(g.scale, 1.0f / std::sqrt(static_cast<float>(dh)));
  }
  Vec out, probs, dq, dk, dvr;
  kernels::ref::sdpa_fwd(g, test::to_double(a.q), test::to_double(a.k), test::to_double(a.v), out, probs);
  Tensor tout = Tensor::empty({n, h, tq, dv}, DType::F32), tprobs = Tensor::empty({n, h, tq, tk}, DType::F32);
  kernels::sdpa_fwd(p, a.q, a.k, a.v, tout, tprobs);
  EXPECT_LT(test::max_rel_error(tout, out), 1e-5);
  EXPECT_LT(test::max_rel_error(tprobs, probs), 1e-5);

  const Tensor dout = test::random_tensor({n, h, tq, dv}, seed + 5);
  kernels::ref::sdpa_bwd(g, test::to_double(a.q), test::to_double(a.k), test::to_double(a.v), probs,
                         test::to_double(dout), dq, dk, dvr);
  Tensor tdq = Tensor::empty(a.q.shape(), DType::F32), tdk = Tensor::empty(a.k.shape(), DType::F32),
         tdv = Tensor::empty(a.v.shape(), DType::F32);
  kernels::sdpa_bwd(p, a.q, a.k, a.v, tprobs, dout, tdq, tdk, tdv);
  EXPECT_LT(test::max_rel_error(tdq, dq), 1e-4);
  EXPECT_LT(test::max_rel_error(tdk, dk), 1e-4);
  EXPECT_LT(test::max_rel_error(tdv, dvr), 1e-5);
}

TEST(SdpaHost, MatchesReference) {
  check_sdpa(2, 3, 5, 5, 8, 8, 0.0f, 300);      // self-attention, default scale
  check_sdpa(1, 2, 3, 7, 4, 6, 0.25f, 310);     // cross-attention: Tq != Tk, Dv != Dh
  check_sdpa(1, 1, 1, 1, 1, 1, 0.0f, 320);      // one token
  check_sdpa(2, 4, 33, 33, 16, 16, 0.0f, 330);  // rows longer than a warp
}

TEST(SdpaHost, CountsTheCudaLaunches) {
  const Attn a = make_attn(1, 2, 4, 4, 8, 8, 400);
  Tensor out = Tensor::empty({1, 2, 4, 8}, DType::F32), probs = Tensor::empty({1, 2, 4, 4}, DType::F32);
  EXPECT_EQ(test::launches_of([&] { kernels::sdpa_fwd({}, a.q, a.k, a.v, out, probs); }), 3);
  Tensor dq = Tensor::empty(a.q.shape(), DType::F32), dk = Tensor::empty(a.k.shape(), DType::F32),
         dv = Tensor::empty(a.v.shape(), DType::F32);
  EXPECT_EQ(test::launches_of([&] { kernels::sdpa_bwd({}, a.q, a.k, a.v, probs, out, dq, dk, dv); }), 5);
  const Tensor x = test::random_tensor({2, 3, 4}, 1), b = test::random_tensor({2, 4, 5}, 2);
  Tensor c = Tensor::empty({2, 3, 5}, DType::F32), y = Tensor::empty({2, 3, 4}, DType::F32),
         dx = Tensor::empty({2, 3, 4}, DType::F32);
  EXPECT_EQ(test::launches_of([&] { kernels::bmm({}, x, b, c); }), 1);
  EXPECT_EQ(test::launches_of([&] { kernels::softmax_fwd(x, y); }), 1);
  EXPECT_EQ(test::launches_of([&] { kernels::softmax_bwd(y, x, dx); }), 1);
  EXPECT_EQ(test::launches_of([&] { kernels::gelu_fwd(x, y); }), 1);
  EXPECT_EQ(test::launches_of([&] { kernels::gelu_bwd(x, x, y, GradMode::Accumulate); }), 1);
}

TEST(SdpaHost, RejectsBadArguments) {
  const Attn a = make_attn(2, 2, 3, 4, 5, 6, 500);
  Tensor out = Tensor::empty({2, 2, 3, 6}, DType::F32), probs = Tensor::empty({2, 2, 3, 4}, DType::F32);
  Tensor bad_probs = Tensor::empty({2, 2, 4, 3}, DType::F32);
  test::expect_error_names([&] { kernels::sdpa_fwd({}, a.q, a.k, a.v, out, bad_probs); }, "sdpa_fwd", "probs");
  const Tensor bad_k = test::random_tensor({2, 2, 4, 4}, 1);
  test::expect_error_names([&] { kernels::sdpa_fwd({}, a.q, bad_k, a.v, out, probs); }, "sdpa_fwd", "k");
  const Tensor bad_v = test::random_tensor({2, 2, 3, 6}, 2);
  test::expect_error_names([&] { kernels::sdpa_fwd({}, a.q, a.k, bad_v, out, probs); }, "sdpa_fwd", "v");
  Tensor bad_out = Tensor::empty({2, 2, 3, 5}, DType::F32);
  test::expect_error_names([&] { kernels::sdpa_fwd({}, a.q, a.k, a.v, bad_out, probs); }, "sdpa_fwd", "out");
  const Tensor q3 = test::random_tensor({2, 3, 5}, 3);
  test::expect_error_names([&] { kernels::sdpa_fwd({}, q3, a.k, a.v, out, probs); }, "sdpa_fwd", "q");
  test::expect_error_names([&] { kernels::sdpa_fwd({-1.0f}, a.q, a.k, a.v, out, probs); }, "sdpa_fwd", "scale");
  const Attn b16 = make_attn(2, 2, 3, 4, 5, 6, 510, DType::BF16);
  test::expect_error_names([&] { kernels::sdpa_fwd({}, b16.q, b16.k, b16.v, out, probs); }, "sdpa_fwd",
                           "f32 on the host");
  Tensor dq = Tensor::empty(a.q.shape(), DType::F32), dk = Tensor::empty(a.k.shape(), DType::F32),
         dv = Tensor::empty(a.k.shape(), DType::F32);
  test::expect_error_names([&] { kernels::sdpa_bwd({}, a.q, a.k, a.v, probs, out, dq, dk, dv); }, "sdpa_bwd", "dv");
}

// ---- Token mean pooling

TEST(TokenPoolRef, BackwardMatchesFiniteDifferences) {
  const std::int64_t n = 2, t = 3, d = 4;
  const Vec x = test::random_vector(n * t * d, 1), w = test::random_vector(n * d, 2);
  Vec dx;
  kernels::ref::token_meanpool_bwd(n, t, d, w, dx);
  auto f = [&](const Vec& v) {
    Vec y;
    kernels::ref::token_meanpool_fwd(n, t, d, v, y);
    return test::dot(w, y);
  };
  const auto r = test::check_gradient(f, x, dx);
  EXPECT_TRUE(r.ok) << r.message();
}

void check_token_pool(const Shape& shape, DType dtype, std::uint64_t seed) {
  SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dtype));
  const double tol = dtype == DType::F32 ? 1e-5 : 1e-2;
  const std::int64_t n = shape[0], t = shape[1], d = shape[2];
  const Tensor x = random_as(shape, seed, dtype), dy = random_as({n, d}, seed + 1, dtype);
  Vec y, dx;
  kernels::ref::token_meanpool_fwd(n, t, d, test::to_double(x), y);
  kernels::ref::token_meanpool_bwd(n, t, d, test::to_double(dy), dx);
  Tensor ty = Tensor::empty({n, d}, dtype), tdx = Tensor::empty(shape, dtype);
  EXPECT_EQ(test::launches_of([&] { kernels::token_meanpool_fwd(x, ty); }), 1);
  EXPECT_LT(test::max_rel_error(ty, y), tol);
  EXPECT_EQ(test::launches_of([&] { kernels::token_meanpool_bwd(dy, tdx, GradMode::Overwrite); }), 1);
  EXPECT_LT(test::max_rel_error(tdx, dx), tol);
  kernels::token_meanpool_bwd(dy, tdx, GradMode::Accumulate);
  EXPECT_LT(test::max_rel_error(tdx, test::plus(dx, dx)), tol);
}

TEST(TokenPoolHost, MatchesReference) {
  check_token_pool({2, 5, 7}, DType::F32, 600);
  check_token_pool({3, 197, 48}, DType::F32, 610);
  check_token_pool({2, 5, 7}, DType::BF16, 620);
}

TEST(TokenPoolHost, RejectsBadArguments) {
  const Tensor x = test::random_tensor({2, 3, 4}, 1);
  Tensor y = Tensor::empty({2, 3}, DType::F32);
  test::expect_error_names([&] { kernels::token_meanpool_fwd(x, y); }, "token_meanpool_fwd", "y");
  const Tensor no_tokens = Tensor::zeros({2, 0, 4}, DType::F32);
  Tensor y4 = Tensor::empty({2, 4}, DType::F32);
  test::expect_error_names([&] { kernels::token_meanpool_fwd(no_tokens, y4); }, "token_meanpool_fwd", "T > 0");
  Tensor dx = Tensor::empty({2, 3, 4}, DType::BF16);
  test::expect_error_names([&] { kernels::token_meanpool_bwd(y4, dx, GradMode::Overwrite); }, "token_meanpool_bwd",
                           "dy");
}

}  // namespace
}  // namespace gppf
