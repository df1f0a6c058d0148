#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/batchnorm.hpp"
#include "kernels/cast.hpp"
#include "kernels/functors/batchnorm.hpp"
#include "kernels/ref/batchnorm.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {
using test::error_of;

using kernels::BatchNormParams;
using kernels::GradMode;
using Vec = std::vector<double>;

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The training-mode forward as a function of (x, gamma, beta), for finite differences.
Vec ref_train_y(const BatchNormParams& p, std::int64_t c, const Vec& x, const Vec& gamma, const Vec& beta) {
  Vec rm(static_cast<std::size_t>(c), 0.0), rv(static_cast<std::size_t>(c), 1.0), y, sm, si;
  kernels::ref::batchnorm_fwd_train(p, c, x, gamma, beta, rm, rv, y, sm, si);
  return y;
}

// Checks dx, dgamma, dbeta of the reference backward against central differences of sum(w * y).
void check_ref_gradients(bool relu, std::uint64_t seed) {
  BatchNormParams p;
  p.relu = relu;
  const std::int64_t rows = 7, c = 3;
  const Vec x = test::random_vector(rows * c, seed, -2.0, 3.0);
  const Vec gamma = test::random_vector(c, seed + 1, 0.5, 1.5);
  const Vec beta = test::random_vector(c, seed + 2, -0.3, 0.3);
  const Vec w = test::random_vector(rows * c, seed + 3);
  if (relu) {
    // Kink guard: no pre-activation may sit within reach of the finite-difference step.
    BatchNormParams plain = p;
    plain.relu = false;
    const Vec z = ref_train_y(plain, c, x, gamma, beta);
    double closest = INFINITY;
    int negatives = 0;
    for (double v : z) {
      closest = std::min(closest, std::abs(v));
      negatives += v < 0;
    }
    ASSERT_GT(closest, 1e-3) << "pick another seed: a pre-activation sits on the ReLU kink";
    ASSERT_GT(negatives, 0) << "the ReLU mask must be exercised";
  }
  Vec rm(c, 0.0), rv(c, 1.0), y, sm, si, dx, dgamma, dbeta;
  kernels::ref::batchnorm_fwd_train(p, c, x, gamma, beta, rm, rv, y, sm, si);
  kernels::ref::batchnorm_bwd(p, c, x, y, w, gamma, sm, si, dx, dgamma, dbeta);
  test::GradCheckOptions o;
  o.step = 1e-6;
  auto fx = [&](const Vec& v) { return dot(w, ref_train_y(p, c, v, gamma, beta)); };
  auto fg = [&](const Vec& v) { return dot(w, ref_train_y(p, c, x, v, beta)); };
  auto fb = [&](const Vec& v) { return dot(w, ref_train_y(p, c, x, gamma, v)); };
  const auto rx = test::check_gradient(fx, x, dx, o);
  const auto rg = test::check_gradient(fg, gamma, dgamma, o);
  const auto rb = test::check_gradient(fb, beta, dbeta, o);
  EXPECT_TRUE(rx.ok) << "dx " << rx.message();
  EXPECT_TRUE(rg.ok) << "dgamma " << rg.message();
  EXPECT_TRUE(rb.ok) << "dbeta " << rb.message();
  EXPECT_EQ(rx.checked, x.size());
}

TEST(BatchNormRef, BackwardMatchesFiniteDifferences) { check_ref_gradients(false, 11); }
TEST(BatchNormRef, BackwardWithReluMatchesFiniteDifferences) { check_ref_gradients(true, 21); }

TEST(BatchNormRef, GradCheckCatchesAWrongDx) {
  BatchNormParams p;
  const std::int64_t c = 2;
  const Vec x = test::random_vector(10, 3), gamma = {1.2, 0.7}, beta = {0.1, -0.2}, w = test::random_vector(10, 4);
  Vec rm(2, 0.0), rv(2, 1.0), y, sm, si, dx, dg, db;
  kernels::ref::batchnorm_fwd_train(p, c, x, gamma, beta, rm, rv, y, sm, si);
  kernels::ref::batchnorm_bwd(p, c, x, y, w, gamma, sm, si, dx, dg, db);
  dx[3] *= 1.001;
  auto fx = [&](const Vec& v) { return dot(w, ref_train_y(p, c, v, gamma, beta)); };
  EXPECT_FALSE(test::check_gradient(fx, x, dx).ok);
}

struct Inputs {
  Tensor x, gamma, beta, rm, rv;
};

Inputs make_inputs(const Shape& shape, std::uint64_t seed) {
  const std::int64_t c = shape.back();
  return {test::random_tensor(shape, seed, 2.0, 5.0), test::random_tensor({c}, seed + 1, 0.5, 1.5),
          test::random_tensor({c}, seed + 2, -0.5, 0.5), test::random_tensor({c}, seed + 3, -1.0, 1.0),
          test::random_tensor({c}, seed + 4, 0.5, 2.0)};
}

// Host forward (train) and backward against the reference, every output, both gradient modes.
void check_host_against_ref(const Shape& shape, const BatchNormParams& p, std::uint64_t seed) {
  SCOPED_TRACE(shape_str(shape) + (p.relu ? " relu" : "") + " eps " + std::to_string(p.eps) + " momentum " +
               std::to_string(p.momentum));
  const std::int64_t c = shape.back();
  Inputs in = make_inputs(shape, seed);
  Vec rm = test::to_double(in.rm), rv = test::to_double(in.rv), y, sm, si;
  kernels::ref::batchnorm_fwd_train(p, c, test::to_double(in.x), test::to_double(in.gamma), test::to_double(in.beta),
                                    rm, rv, y, sm, si);
  Tensor ty = Tensor::empty(shape, DType::F32), tsm = Tensor::empty({c}, DType::F32),
         tsi = Tensor::empty({c}, DType::F32);
  kernels::batchnorm_fwd_train(p, in.x, in.gamma, in.beta, in.rm, in.rv, ty, tsm, tsi);
  EXPECT_LT(test::max_rel_error(ty, y), 1e-4);
  EXPECT_LT(test::max_rel_error(tsm, sm), 1e-4);
  EXPECT_LT(test::max_rel_error(tsi, si), 1e-4);
  EXPECT_LT(test::max_rel_error(in.rm, rm), 1e-4);
  EXPECT_LT(test::max_rel_error(in.rv, rv), 1e-4);

  const Tensor dy = test::random_tensor(shape, seed + 5);
  Vec dx, dg, db;
  kernels::ref::batchnorm_bwd(p, c, test::to_double(in.x), test::to_double(ty), test::to_double(dy),
                              test::to_double(in.gamma), test::to_double(tsm), test::to_double(tsi), dx, dg, db);
  Tensor tdx = Tensor::empty(shape, DType::F32);
  Tensor tdg = test::random_tensor({c}, seed + 6), tdb = test::random_tensor({c}, seed + 7);
  const Vec dg0 = test::to_double(tdg), db0 = test::to_double(tdb);
  kernels::batchnorm_bwd(p, in.x, ty, dy, in.gamma, tsm, tsi, tdx, tdg, tdb, GradMode::Overwrite);
  EXPECT_LT(test::max_rel_error(tdx, dx), 1e-4);
  EXPECT_LT(test::max_rel_error(tdg, dg), 1e-4);
  EXPECT_LT(test::max_rel_error(tdb, db), 1e-4);
  tdg.copy_from(Tensor::from_vector({c}, test::to_float(dg0)));
  tdb.copy_from(Tensor::from_vector({c}, test::to_float(db0)));
  kernels::batchnorm_bwd(p, in.x, ty, dy, in.gamma, tsm, tsi, tdx, tdg, tdb, GradMode::Accumulate);
  Vec dg_acc(dg0), db_acc(db0);
  for (std::size_t i = 0; i < dg_acc.size(); ++i) {
    dg_acc[i] += dg[i];
    db_acc[i] += db[i];
  }
  EXPECT_LT(test::max_rel_error(tdg, dg_acc), 1e-4);
  EXPECT_LT(test::max_rel_error(tdb, db_acc), 1e-4);
  EXPECT_LT(test::max_rel_error(tdx, dx), 1e-4);
}

TEST(BatchNormHost, MatchesReference) {
  std::uint64_t seed = 100;
  // Narrow channel counts run several pixels per row (4, 8, 16: rows of 64, 5: rows of 320 with a
  // partial last row; 11: one pixel per row); 70 runs one pixel per row.
  for (const Shape& shape : {Shape{3, 5, 7, 5}, Shape{17, 3}, Shape{2, 9, 11, 70}, Shape{1, 3, 1, 2}, Shape{5, 7, 9, 4},
                             Shape{3, 6, 5, 8}, Shape{2, 5, 5, 16}, Shape{2, 4, 3, 11}})
    for (bool relu : {false, true})
      for (float eps : {1e-5f, 1e-3f}) {
        BatchNormParams p;
        p.relu = relu;
        p.eps = eps;
        p.momentum = relu ? 0.3f : 0.1f;
        check_host_against_ref(shape, p, seed += 10);
      }
}

TEST(BatchNormHost, LargeBatchMatchesReference) {
  // Enough rows for several threads and many row blocks.
  BatchNormParams p;
  p.relu = true;
  check_host_against_ref({8, 31, 29, 6}, p, 7);
}

TEST(BatchNormHost, RunningStatisticsByHand) {
  // Channel 0: 1,2,3,4 -> mean 2.5, biased var 1.25, unbiased 5/3. Channel 1: 0,0,0,8 -> mean 2,
  // biased var 12, unbiased 16.
  const Tensor x = Tensor::from_vector({4, 2}, {1, 0, 2, 0, 3, 0, 4, 8});
  const Tensor gamma = Tensor::from_vector({2}, {1, 1}), beta = Tensor::from_vector({2}, {0, 0});
  Tensor rm = Tensor::from_vector({2}, {0, 1}), rv = Tensor::from_vector({2}, {1, 1});
  Tensor y = Tensor::empty({4, 2}, DType::F32), sm = Tensor::empty({2}, DType::F32),
         si = Tensor::empty({2}, DType::F32);
  BatchNormParams p;  // momentum 0.1
  kernels::batchnorm_fwd_train(p, x, gamma, beta, rm, rv, y, sm, si);
  const float* r = rm.data_as<float>();
  const float* v = rv.data_as<float>();
  EXPECT_NEAR(r[0], 0.25f, 1e-6);
  EXPECT_NEAR(r[1], 0.9f + 0.2f, 1e-6);
  EXPECT_NEAR(v[0], 0.9f + 0.1f * 5.0f / 3.0f, 1e-6);
  EXPECT_NEAR(v[1], 0.9f + 1.6f, 1e-6);
  EXPECT_NEAR(sm.data_as<float>()[0], 2.5f, 1e-6);
  EXPECT_NEAR(si.data_as<float>()[0], 1.0 / std::sqrt(1.25 + 1e-5), 1e-6);
  EXPECT_NEAR(si.data_as<float>()[1], 1.0 / std::sqrt(12.0 + 1e-5), 1e-6);
  EXPECT_NEAR(y.data_as<float>()[7], 6.0 / std::sqrt(12.0 + 1e-5), 1e-5);
}

TEST(BatchNormHost, InferenceUsesRunningStatistics) {
  const Shape shape{3, 5, 7, 5};
  for (bool relu : {false, true}) {
    BatchNormParams p;
    p.relu = relu;
    p.eps = 1e-3f;
    Inputs in = make_inputs(shape, 50);
    const Vec rm0 = test::to_double(in.rm), rv0 = test::to_double(in.rv);
    Vec y;
    kernels::ref::batchnorm_fwd_infer(p, 5, test::to_double(in.x), test::to_double(in.gamma), test::to_double(in.beta),
                                      rm0, rv0, y);
    Tensor ty = Tensor::empty(shape, DType::F32);
    kernels::batchnorm_fwd_infer(p, in.x, in.gamma, in.beta, in.rm, in.rv, ty);
    EXPECT_LT(test::max_rel_error(ty, y), 1e-4);
    // By hand, element 7 (channel 2), and the running statistics are left alone.
    const double z = in.gamma.data_as<float>()[2] * (in.x.data_as<float>()[7] - rm0[2]) / std::sqrt(rv0[2] + 1e-3) +
                     in.beta.data_as<float>()[2];
    EXPECT_NEAR(ty.data_as<float>()[7], relu ? std::max(z, 0.0) : z, 1e-5);
    EXPECT_EQ(test::to_double(in.rm), rm0);
    EXPECT_EQ(test::to_double(in.rv), rv0);
  }
}

TEST(BatchNormHost, Bf16MatchesReference) {
  const Shape shape{3, 5, 7, 5};
  BatchNormParams p;
  p.relu = true;
  Inputs in = make_inputs(shape, 70);
  const Tensor xb = kernels::cast(in.x, DType::BF16);
  Vec rm = test::to_double(in.rm), rv = test::to_double(in.rv), y, sm, si;
  kernels::ref::batchnorm_fwd_train(p, 5, test::to_double(xb), test::to_double(in.gamma), test::to_double(in.beta), rm,
                                    rv, y, sm, si);
  Tensor ty = Tensor::empty(shape, DType::BF16), tsm = Tensor::empty({5}, DType::F32),
         tsi = Tensor::empty({5}, DType::F32);
  kernels::batchnorm_fwd_train(p, xb, in.gamma, in.beta, in.rm, in.rv, ty, tsm, tsi);
  EXPECT_LT(test::max_rel_error(ty, y), 1e-2);
  EXPECT_LT(test::max_rel_error(tsm, sm), 1e-4);
  EXPECT_LT(test::max_rel_error(tsi, si), 1e-4);
  const Tensor dy = kernels::cast(test::random_tensor(shape, 71), DType::BF16);
  Vec dx, dg, db;
  kernels::ref::batchnorm_bwd(p, 5, test::to_double(xb), test::to_double(ty), test::to_double(dy),
                              test::to_double(in.gamma), sm, si, dx, dg, db);
  Tensor tdx = Tensor::empty(shape, DType::BF16), tdg = Tensor::empty({5}, DType::F32),
         tdb = Tensor::empty({5}, DType::F32);
  kernels::batchnorm_bwd(p, xb, ty, dy, in.gamma, tsm, tsi, tdx, tdg, tdb, GradMode::Overwrite);
  EXPECT_LT(test::max_rel_error(tdx, dx), 2e-2);
  EXPECT_LT(test::max_rel_error(tdg, dg), 1e-3);
  EXPECT_LT(test::max_rel_error(tdb, db), 1e-3);
}

TEST(BatchNormHost, RejectsBadShapesAndDtypes) {
  Inputs in = make_inputs({2, 3, 3, 4}, 90);
  Tensor y = Tensor::empty({2, 3, 3, 4}, DType::F32), sm = Tensor::empty({4}, DType::F32),
         si = Tensor::empty({4}, DType::F32);
  const BatchNormParams p;
  Tensor bad_gamma = Tensor::zeros({3}, DType::F32);
  std::string msg =
      error_of([&] { kernels::batchnorm_fwd_train(p, in.x, bad_gamma, in.beta, in.rm, in.rv, y, sm, si); });
  EXPECT_NE(msg.find("batchnorm_fwd_train"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gamma"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3]"), std::string::npos) << msg;
  Tensor bad_y = Tensor::empty({2, 3, 4, 4}, DType::F32);
  EXPECT_THROW(kernels::batchnorm_fwd_train(p, in.x, in.gamma, in.beta, in.rm, in.rv, bad_y, sm, si), Error);
  Tensor half_rm = Tensor::zeros({4}, DType::BF16);
  EXPECT_THROW(kernels::batchnorm_fwd_train(p, in.x, in.gamma, in.beta, half_rm, in.rv, y, sm, si), Error);
  Tensor one_row = Tensor::zeros({1, 4}, DType::F32), y1 = Tensor::empty({1, 4}, DType::F32);
  msg = error_of([&] { kernels::batchnorm_fwd_train(p, one_row, in.gamma, in.beta, in.rm, in.rv, y1, sm, si); });
  EXPECT_NE(msg.find("at least 2 values per channel"), std::string::npos) << msg;
  Tensor flat = Tensor::zeros({4}, DType::F32);
  EXPECT_THROW(kernels::batchnorm_fwd_infer(p, flat, in.gamma, in.beta, in.rm, in.rv, flat), Error);
  Tensor ints = Tensor::zeros({2, 4}, DType::I32);
  EXPECT_THROW(kernels::batchnorm_fwd_infer(p, ints, in.gamma, in.beta, in.rm, in.rv, ints), Error);
  BatchNormParams bad_eps;
  bad_eps.eps = 0.0f;
  EXPECT_THROW(kernels::batchnorm_fwd_infer(bad_eps, in.x, in.gamma, in.beta, in.rm, in.rv, y), Error);
  Tensor dx = Tensor::empty({2, 3, 3, 4}, DType::F32), dg = Tensor::empty({4}, DType::F32),
         db = Tensor::empty({5}, DType::F32);
  msg = error_of([&] { kernels::batchnorm_bwd(p, in.x, y, y, in.gamma, sm, si, dx, dg, db, GradMode::Overwrite); });
  EXPECT_NE(msg.find("batchnorm_bwd"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dbeta"), std::string::npos) << msg;
  // Without relu, y is not read: an undefined tensor is fine.
  db = Tensor::empty({4}, DType::F32);
  EXPECT_NO_THROW(kernels::batchnorm_bwd(p, in.x, Tensor(), y, in.gamma, sm, si, dx, dg, db, GradMode::Overwrite));
}

// ---- the element-wise passes: run_batchnorm_pass against the scalar functors ----------------------

using kernels::BatchNormApplyFunctor;
using kernels::BatchNormBwdDataFunctor;
using kernels::BatchNormPass;

// pass(i) for every i in [0, count), in count's index type, as a backend's launch does.
struct SerialLaunch {
  template <class I, class P>
  void operator()(I count, const P& pass) const {
    for (I i = 0; i < count; ++i) pass(i);
  }
};

// n elements of dtype, random in [lo, hi), starting `offset` elements into their allocation (an offset
// that is not a multiple of 16 bytes makes a misaligned view).
Tensor buffer(std::int64_t n, DType dtype, std::int64_t offset, std::uint64_t seed, double lo, double hi) {
  return kernels::cast(test::random_tensor({n + offset}, seed, lo, hi), dtype).narrow0(offset, n);
}

// The first differing element of two same-size tensors, or -1.
template <class T>
std::int64_t first_difference(const Tensor& a, const Tensor& b) {
  const auto* pa = static_cast<const T*>(a.data());
  const auto* pb = static_cast<const T*>(b.data());
  for (std::int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(pa + i, pb + i, sizeof(T)) != 0) return i;
  return -1;
}

BatchNormPass expected_pass(std::int64_t channels, std::size_t element_size, bool aligned) {
  const auto v = static_cast<std::int64_t>(16 / element_size);
  return aligned && channels % v == 0 ? BatchNormPass::Vector32 : BatchNormPass::Scalar32;
}

// Forward apply and backward data over rows x channels elements: the pass run_batchnorm_pass picks
// against the scalar functor's operator() (the code path before vector passes), bit for bit. y (read
// by the backward ReLU mask) starts y_offset elements in, the other tensors offset.
template <class T, bool kRelu>
void check_passes(std::int64_t rows, std::int64_t channels, std::int64_t offset, std::uint64_t seed,
                  std::int64_t y_offset = -1) {
  if (y_offset < 0) y_offset = offset;
  const DType dt = dtype_of<T>::value;
  SCOPED_TRACE(std::string(dtype_name(dt)) + " C=" + std::to_string(channels) + (kRelu ? " relu" : "") + " offset " +
               std::to_string(offset));
  const std::int64_t n = rows * channels;
  const auto size = static_cast<std::int64_t>(sizeof(T));
  const bool aligned = offset * size % 16 == 0, y_aligned = y_offset * size % 16 == 0;
  const Tensor x = buffer(n, dt, offset, seed, -2.0, 3.0), y_in = buffer(n, dt, y_offset, seed + 1, -1.0, 1.0),
               dy = buffer(n, dt, offset, seed + 2, -1.0, 1.0);
  const Tensor mean = test::random_tensor({channels}, seed + 3), scale = test::random_tensor({channels}, seed + 4),
               beta = test::random_tensor({channels}, seed + 5), ca = test::random_tensor({channels}, seed + 6),
               cb = test::random_tensor({channels}, seed + 7), ck = test::random_tensor({channels}, seed + 8);
  const auto* xs = static_cast<const T*>(x.data());
  const float *m = mean.data_as<float>(), *s = scale.data_as<float>(), *b = beta.data_as<float>();

  Tensor y_ref = Tensor::empty({n}, dt), y = buffer(n, dt, offset, seed + 9, 0.0, 1.0);
  const BatchNormApplyFunctor<T, kRelu> ref{xs, static_cast<T*>(y_ref.data()), m, s, b, channels};
  for (std::int64_t i = 0; i < n; ++i) ref(i);
  const BatchNormApplyFunctor<T, kRelu> f{xs, static_cast<T*>(y.data()), m, s, b, channels};
  EXPECT_EQ(kernels::run_batchnorm_pass(n, f, SerialLaunch{}), expected_pass(channels, sizeof(T), aligned));
  EXPECT_EQ(first_difference<T>(y, y_ref), -1) << "forward";

  Tensor dx_ref = Tensor::empty({n}, dt), dx = buffer(n, dt, offset, seed + 10, 0.0, 1.0);
  const auto* ys = static_cast<const T*>(y_in.data());
  const auto* dys = static_cast<const T*>(dy.data());
  const float *a = ca.data_as<float>(), *bb = cb.data_as<float>(), *k = ck.data_as<float>();
  const BatchNormBwdDataFunctor<T, kRelu> gref{xs, ys, dys, static_cast<T*>(dx_ref.data()), m, a, bb, k, channels};
  for (std::int64_t i = 0; i < n; ++i) gref(i);
  const BatchNormBwdDataFunctor<T, kRelu> g{xs, ys, dys, static_cast<T*>(dx.data()), m, a, bb, k, channels};
  EXPECT_EQ(kernels::run_batchnorm_pass(n, g, SerialLaunch{}),
            expected_pass(channels, sizeof(T), aligned && (y_aligned || !kRelu)));
  EXPECT_EQ(first_difference<T>(dx, dx_ref), -1) << "backward data";
}

template <class T>
void check_passes_all(std::uint64_t seed) {
  for (std::int64_t channels : {1, 3, 4, 8, 10, 64, 100})
    for (std::int64_t offset : {0, 1}) {
      check_passes<T, false>(37, channels, offset, seed += 20);
      check_passes<T, true>(37, channels, offset, seed += 20);
    }
}

TEST(BatchNormPasses, VectorMatchesScalarF32) { check_passes_all<float>(1000); }
TEST(BatchNormPasses, VectorMatchesScalarBf16) { check_passes_all<bf16>(2000); }

TEST(BatchNormPasses, NarrowViewsOfVectorisableTensors) {
  // A view starting 16 bytes in stays vectorised; 4 or 8 bytes in (inside a 16-byte chunk) falls back.
  check_passes<float, true>(9, 64, 4, 3000);
  check_passes<float, true>(9, 64, 2, 3100);
  check_passes<bf16, false>(9, 64, 8, 3200);
  check_passes<bf16, false>(9, 64, 4, 3300);
  // Only the ReLU mask's y misaligned: the backward falls back, unless it does not read y.
  check_passes<float, true>(9, 64, 0, 3400, 1);
  check_passes<float, false>(9, 64, 0, 3500, 1);
  check_passes<bf16, true>(9, 64, 0, 3600, 3);
}

// Coefficients that make each output its channel index: any slip in the chunk-to-channel mapping
// (a chunk straddling channels, a channel computed per chunk from the wrong element) shows up.
template <class T>
void check_channel_mapping(std::int64_t channels) {
  const DType dt = dtype_of<T>::value;
  SCOPED_TRACE(std::string(dtype_name(dt)) + " C=" + std::to_string(channels));
  const std::int64_t rows = 5, n = rows * channels;
  std::vector<float> iota(static_cast<std::size_t>(channels));
  for (std::size_t c = 0; c < iota.size(); ++c) iota[c] = static_cast<float>(c);
  const Tensor index = Tensor::from_vector({channels}, iota), zeros = Tensor::zeros({channels}, DType::F32),
               ones = Tensor::from_vector({channels}, std::vector<float>(iota.size(), 1.0f));
  const float *ci = index.data_as<float>(), *c0 = zeros.data_as<float>(), *c1 = ones.data_as<float>();
  const Tensor x = kernels::cast(Tensor::zeros({n}, DType::F32), dt);
  Tensor y = Tensor::empty({n}, dt), dx = Tensor::empty({n}, dt);
  const auto* xs = static_cast<const T*>(x.data());
  const BatchNormPass want = expected_pass(channels, sizeof(T), true);
  // y = (0 - 0) * 0 + c; dx = 1 * (0 - 0 - (0 - c) * 1) = c.
  const BatchNormApplyFunctor<T, true> f{xs, static_cast<T*>(y.data()), c0, c0, ci, channels};
  EXPECT_EQ(kernels::run_batchnorm_pass(n, f, SerialLaunch{}), want);
  const BatchNormBwdDataFunctor<T, false> g{xs, nullptr, xs, static_cast<T*>(dx.data()), ci, c1, c0, c1, channels};
  EXPECT_EQ(kernels::run_batchnorm_pass(n, g, SerialLaunch{}), want);
  const std::vector<double> yv = test::to_double(y), dxv = test::to_double(dx);
  for (std::int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(yv[static_cast<std::size_t>(i)], static_cast<double>(i % channels)) << "forward, element " << i;
    ASSERT_EQ(dxv[static_cast<std::size_t>(i)], static_cast<double>(i % channels)) << "backward, element " << i;
  }
}

TEST(BatchNormPasses, EveryElementGetsItsChannel) {
  for (std::int64_t channels : {1, 3, 4, 8, 10, 24, 64, 100}) {
    check_channel_mapping<float>(channels);
    check_channel_mapping<bf16>(channels);
  }
}

TEST(BatchNormPasses, SixtyFourBitIndicesFromTwoToThe31Elements) {
  // Only the choice is checked (the launch records it and runs nothing): 2^31 elements do not fit
  // a test. The 64-bit passes themselves run in the test below.
  alignas(16) static float buf[64] = {};
  const BatchNormApplyFunctor<float, false> f{buf, buf, buf, buf, buf, 64};
  std::size_t index_bytes = 0;
  std::int64_t count = 0;
  auto record = [&](auto c, const auto&) {
    index_bytes = sizeof(c);
    count = static_cast<std::int64_t>(c);
  };
  const std::int64_t big = std::int64_t{1} << 31;
  EXPECT_EQ(kernels::run_batchnorm_pass(big - 64, f, record), BatchNormPass::Vector32);
  EXPECT_EQ(index_bytes, 4u);
  EXPECT_EQ(count, (big - 64) / 4);
  EXPECT_EQ(kernels::run_batchnorm_pass(big, f, record), BatchNormPass::Vector64);
  EXPECT_EQ(index_bytes, 8u);
  EXPECT_EQ(count, big / 4);
  const BatchNormApplyFunctor<float, false> odd{buf, buf, buf, buf, buf, 3};
  EXPECT_EQ(kernels::run_batchnorm_pass(big - 2, odd, record), BatchNormPass::Scalar32);
  EXPECT_EQ(kernels::run_batchnorm_pass(big + 1, odd, record), BatchNormPass::Scalar64);
  EXPECT_EQ(count, big + 1);
}

template <class T, bool kRelu>
void check_wide_index_passes(std::int64_t channels) {
  const DType dt = dtype_of<T>::value;
  const std::int64_t n = 11 * channels;
  const Tensor x = buffer(n, dt, 0, 4000, -2.0, 2.0), mean = test::random_tensor({channels}, 4001),
               scale = test::random_tensor({channels}, 4002), beta = test::random_tensor({channels}, 4003);
  Tensor y_ref = Tensor::empty({n}, dt), y64 = Tensor::empty({n}, dt), s64 = Tensor::empty({n}, dt);
  const auto* xs = static_cast<const T*>(x.data());
  const float *m = mean.data_as<float>(), *s = scale.data_as<float>(), *b = beta.data_as<float>();
  const BatchNormApplyFunctor<T, kRelu> ref{xs, static_cast<T*>(y_ref.data()), m, s, b, channels};
  for (std::int64_t i = 0; i < n; ++i) ref(i);
  using Vector = kernels::BatchNormApplyVectorPass<T, kRelu, std::int64_t>;
  const Vector v{{xs, static_cast<T*>(y64.data()), m, s, b, channels}, channels};
  ASSERT_TRUE(Vector::vectorisable(v.f));
  SerialLaunch{}(n / Vector::kV, v);
  const kernels::BatchNormScalarPass<BatchNormApplyFunctor<T, kRelu>, std::int64_t> sp{
      {xs, static_cast<T*>(s64.data()), m, s, b, channels}, channels};
  SerialLaunch{}(n, sp);
  EXPECT_EQ(first_difference<T>(y64, y_ref), -1);
  EXPECT_EQ(first_difference<T>(s64, y_ref), -1);
}

TEST(BatchNormPasses, SixtyFourBitPassesMatchScalar) {
  check_wide_index_passes<float, true>(64);
  check_wide_index_passes<float, false>(12);
  check_wide_index_passes<bf16, true>(64);
  check_wide_index_passes<bf16, false>(16);
}

}  // namespace
}  // namespace gppf

namespace gppf {
namespace {

// Synchronised BN's halves (batchnorm_channel_sums, batchnorm_bwd_data): a batch split in two
// "replicas" whose sums are added gives the whole batch's batch norm, forward and backward, and the
// sums match a double loop; whatever the thread count, the sums are the same bits.
TEST(BatchNormSynced, TwoHalvesGiveTheWholeBatch) {
  for (const bool relu : {false, true}) {
    SCOPED_TRACE(relu ? "relu" : "no relu");
    BatchNormParams p;
    p.relu = relu;
    const std::int64_t n = 12, c = 5;
    const Tensor x = test::random_tensor({n, 2, c}, 3, -1.0, 3.0), dy = test::random_tensor({n, 2, c}, 4);
    const Tensor gamma = test::random_tensor({c}, 5, 0.5, 1.5), beta = test::random_tensor({c}, 6);
    // The whole batch through the plain kernels.
    Tensor rm = Tensor::zeros({c}, DType::F32), rv = Tensor::zeros({c}, DType::F32);
    Tensor y = Tensor::empty(x.shape(), DType::F32), sm = Tensor::empty({c}, DType::F32),
           si = Tensor::empty({c}, DType::F32), dx = Tensor::empty(x.shape(), DType::F32),
           dg = Tensor::empty({c}, DType::F32), db = Tensor::empty({c}, DType::F32);
    kernels::batchnorm_fwd_train(p, x, gamma, beta, rm, rv, y, sm, si);
    kernels::batchnorm_bwd(p, x, y, dy, gamma, sm, si, dx, dg, db, GradMode::Overwrite);
    // Forward sums of the halves, added: the whole batch's mean and variance.
    const Tensor h0 = x.narrow0(0, 5), h1 = x.narrow0(5, n - 5);
    std::vector<double> s = kernels::batchnorm_channel_sums(false, h0, Tensor(), Tensor(), Tensor(), Tensor());
    const std::vector<double> s1 = kernels::batchnorm_channel_sums(false, h1, Tensor(), Tensor(), Tensor(), Tensor());
    ASSERT_EQ(s.size(), static_cast<std::size_t>(2 * c));
    for (std::size_t i = 0; i < s.size(); ++i) s[i] += s1[i];
    const Vec xv = test::to_double(x);
    const double rows = static_cast<double>(n * 2);
    for (std::int64_t ch = 0; ch < c; ++ch) {
      double sx = 0, sxx = 0;
      for (std::int64_t r = 0; r < n * 2; ++r) {
        sx += xv[static_cast<std::size_t>(r * c + ch)];
        sxx += xv[static_cast<std::size_t>(r * c + ch)] * xv[static_cast<std::size_t>(r * c + ch)];
      }
      EXPECT_NEAR(s[static_cast<std::size_t>(ch)], sx, 1e-9 * (1 + std::abs(sx)));
      EXPECT_NEAR(s[static_cast<std::size_t>(c + ch)], sxx, 1e-9 * (1 + sxx));
      const double mean = sx / rows;
      EXPECT_NEAR(mean, sm.data_as<float>()[ch], 1e-5);
      EXPECT_NEAR(1.0 / std::sqrt(sxx / rows - mean * mean + p.eps), si.data_as<float>()[ch], 1e-4);
    }
    // Backward sums of the halves with the whole batch's statistics, then each half's dx from the
    // added sums: the whole batch's dx and affine gradients.
    const Tensor y0 = y.narrow0(0, 5), y1 = y.narrow0(5, n - 5), d0 = dy.narrow0(0, 5), d1 = dy.narrow0(5, n - 5);
    std::vector<double> g = kernels::batchnorm_channel_sums(relu, h0, y0, d0, sm, si);
    const std::vector<double> g1 = kernels::batchnorm_channel_sums(relu, h1, y1, d1, sm, si);
    for (std::size_t i = 0; i < g.size(); ++i) g[i] += g1[i];
    std::vector<float> a(static_cast<std::size_t>(c)), b(a.size()), k(a.size());
    for (std::int64_t ch = 0; ch < c; ++ch) {
      const auto cc = static_cast<std::size_t>(ch);
      const double is = si.data_as<float>()[ch];
      EXPECT_NEAR(g[cc], db.data_as<float>()[ch], 1e-4) << "dbeta";
      EXPECT_NEAR(g[static_cast<std::size_t>(c) + cc], dg.data_as<float>()[ch], 1e-4) << "dgamma";
      a[cc] = static_cast<float>(gamma.data_as<float>()[ch] * is);
      b[cc] = static_cast<float>(g[cc] / rows);
      k[cc] = static_cast<float>(is * g[static_cast<std::size_t>(c) + cc] / rows);
    }
    const Tensor at = Tensor::from_vector({c}, a), bt = Tensor::from_vector({c}, b), kt = Tensor::from_vector({c}, k);
    Tensor dx0 = Tensor::empty(h0.shape(), DType::F32), dx1 = Tensor::empty(h1.shape(), DType::F32);
    kernels::batchnorm_bwd_data(relu, h0, y0, d0, sm, at, bt, kt, dx0);
    kernels::batchnorm_bwd_data(relu, h1, y1, d1, sm, at, bt, kt, dx1);
    EXPECT_LT(test::max_rel_error(dx0, dx.narrow0(0, 5).clone()), 1e-5);
    EXPECT_LT(test::max_rel_error(dx1, dx.narrow0(5, n - 5).clone()), 1e-5);
  }
}

TEST(BatchNormSynced, SumsDoNotDependOnTheThreadCount) {
  const Tensor x = test::random_tensor({3000, 16}, 9, -2.0, 2.0);
  const std::vector<double> many = kernels::batchnorm_channel_sums(false, x, Tensor(), Tensor(), Tensor(), Tensor());
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<double> one = kernels::batchnorm_channel_sums(false, x, Tensor(), Tensor(), Tensor(), Tensor());
  omp_set_num_threads(threads);
  EXPECT_EQ(std::memcmp(many.data(), one.data(), many.size() * sizeof(double)), 0);
}

}  // namespace
}  // namespace gppf
