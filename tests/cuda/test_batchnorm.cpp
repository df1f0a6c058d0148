// CUDA batch norm against the host backend: f32 within 1e-3, bf16 within 2e-2 (the host runs in f32 on
// the same bf16-rounded inputs).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/cuda_runtime.hpp"
#include "kernels/batchnorm.hpp"
#include "kernels/cast.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::BatchNormParams;
using kernels::GradMode;

Tensor on_device(const Tensor& host_f32, DType dtype) { return kernels::cast(host_f32, dtype).to(Device::cuda(0)); }
// The host's view of what the device holds: f32 values rounded through `dtype`.
Tensor rounded(const Tensor& host_f32, DType dtype) {
  return kernels::cast(kernels::cast(host_f32, dtype), DType::F32);
}

void check_batchnorm(const Shape& shape, DType dtype, bool relu, std::uint64_t seed) {
  SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dtype) + (relu ? " relu" : ""));
  const double tol = dtype == DType::F32 ? 1e-3 : 2e-2;
  const std::int64_t c = shape.back();
  const Device gpu = Device::cuda(0);
  BatchNormParams p;
  p.relu = relu;
  const Tensor x = rounded(test::random_tensor(shape, seed, -1.0, 3.0), dtype);
  const Tensor gamma = test::random_tensor({c}, seed + 1, 0.5, 1.5), beta = test::random_tensor({c}, seed + 2);
  Tensor rm = test::random_tensor({c}, seed + 3), rv = test::random_tensor({c}, seed + 4, 0.5, 2.0);
  Tensor rm_d = rm.to(gpu), rv_d = rv.to(gpu);
  Tensor y = Tensor::empty(shape, DType::F32), sm = Tensor::empty({c}, DType::F32), si = Tensor::empty({c}, DType::F32);
  kernels::batchnorm_fwd_train(p, x, gamma, beta, rm, rv, y, sm, si);
  const Tensor x_d = on_device(x, dtype), gamma_d = gamma.to(gpu), beta_d = beta.to(gpu);
  Tensor y_d = Tensor::empty(shape, dtype, gpu), sm_d = Tensor::empty({c}, DType::F32, gpu),
         si_d = Tensor::empty({c}, DType::F32, gpu);
  kernels::batchnorm_fwd_train(p, x_d, gamma_d, beta_d, rm_d, rv_d, y_d, sm_d, si_d);
  cuda::device_synchronize(0);
  EXPECT_LT(test::max_rel_error(y_d, y), tol);
  EXPECT_LT(test::max_rel_error(sm_d, sm), 1e-3);
  EXPECT_LT(test::max_rel_error(si_d, si), 1e-3);
  EXPECT_LT(test::max_rel_error(rm_d, rm), 1e-3);
  EXPECT_LT(test::max_rel_error(rv_d, rv), 1e-3);

  const Tensor dy = rounded(test::random_tensor(shape, seed + 5), dtype);
  Tensor dx = Tensor::empty(shape, DType::F32), dg = Tensor::empty({c}, DType::F32),
         db = Tensor::empty({c}, DType::F32);
  kernels::batchnorm_bwd(p, x, y, dy, gamma, sm, si, dx, dg, db, GradMode::Overwrite);
  const Tensor dy_d = on_device(dy, dtype);
  Tensor dx_d = Tensor::empty(shape, dtype, gpu), dg_d = Tensor::empty({c}, DType::F32, gpu),
         db_d = Tensor::empty({c}, DType::F32, gpu);
  kernels::batchnorm_bwd(p, x_d, y_d, dy_d, gamma_d, sm_d, si_d, dx_d, dg_d, db_d, GradMode::Overwrite);
  cuda::device_synchronize(0);
  EXPECT_LT(test::max_rel_error(dx_d, dx), tol);
  EXPECT_LT(test::max_rel_error(dg_d, dg), tol);
  EXPECT_LT(test::max_rel_error(db_d, db), tol);
  // Accumulate adds this call's gradients to the ones already there: twice the single result.
  kernels::batchnorm_bwd(p, x_d, y_d, dy_d, gamma_d, sm_d, si_d, dx_d, dg_d, db_d, GradMode::Accumulate);
  cuda::device_synchronize(0);
  const auto dgv = test::to_double(dg), dbv = test::to_double(db);
  std::vector<double> dg2(dgv.size()), db2(dbv.size());
  for (std::size_t i = 0; i < dgv.size(); ++i) {
    dg2[i] = 2 * dgv[i];
    db2[i] = 2 * dbv[i];
  }
  EXPECT_LT(test::max_rel_error(dg_d, dg2), tol);
  EXPECT_LT(test::max_rel_error(db_d, db2), tol);

  kernels::batchnorm_fwd_infer(p, x, gamma, beta, rm, rv, y);
  kernels::batchnorm_fwd_infer(p, x_d, gamma_d, beta_d, rm_d, rv_d, y_d);
  cuda::device_synchronize(0);
  EXPECT_LT(test::max_rel_error(y_d, y), tol);
}

TEST(BatchNormCuda, MatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 1;
  for (DType dtype : {DType::F32, DType::BF16})
    for (bool relu : {false, true})
      for (const Shape& shape : {Shape{3, 5, 7, 5}, Shape{17, 3}, Shape{8, 28, 28, 64}, Shape{2, 9, 11, 70}})
        check_batchnorm(shape, dtype, relu, seed += 10);
}

// The first element whose bits differ between two device tensors of one shape and dtype, or -1.
std::int64_t first_difference(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to(Device::host()), hb = b.to(Device::host());
  const std::size_t size = a.dtype() == DType::BF16 ? 2 : 4;
  const auto* pa = static_cast<const unsigned char*>(ha.data());
  const auto* pb = static_cast<const unsigned char*>(hb.data());
  for (std::int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(pa + i * size, pb + i * size, size) != 0) return i;
  return -1;
}

// `shape` on the GPU as a view one element into its allocation: never 16-byte aligned, so the
// element-wise passes take their scalar form.
Tensor misaligned(const Shape& shape, DType dtype) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return Tensor::empty({n + 1}, dtype, Device::cuda(0)).narrow0(1, n).reshape(shape);
}

// The same inputs in aligned tensors (vector passes where the channel count allows) and in misaligned
// views (scalar passes): every output bit for bit equal, since the passes share each element's
// arithmetic and the reductions do not depend on alignment. Also against the host, within tolerance.
void check_vector_parity(const Shape& shape, DType dtype, bool relu, std::uint64_t seed) {
  SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dtype) + (relu ? " relu" : ""));
  check_batchnorm(shape, dtype, relu, seed);
  const std::int64_t c = shape.back();
  const Device gpu = Device::cuda(0);
  BatchNormParams p;
  p.relu = relu;
  const Tensor x = on_device(test::random_tensor(shape, seed, -1.0, 3.0), dtype);
  const Tensor dy = on_device(test::random_tensor(shape, seed + 1), dtype);
  const Tensor gamma = test::random_tensor({c}, seed + 2, 0.5, 1.5).to(gpu),
               beta = test::random_tensor({c}, seed + 3).to(gpu);
  const Tensor rm0 = test::random_tensor({c}, seed + 4), rv0 = test::random_tensor({c}, seed + 5, 0.5, 2.0);
  Tensor xv = misaligned(shape, dtype), dyv = misaligned(shape, dtype);
  xv.copy_from(x);
  dyv.copy_from(dy);
  struct Outputs {
    Tensor y, y_infer, dx, sm, si, dg, db;
  };
  auto run = [&](const Tensor& xs, const Tensor& dys, Outputs o) {
    Tensor rm = rm0.to(gpu), rv = rv0.to(gpu);
    kernels::batchnorm_fwd_train(p, xs, gamma, beta, rm, rv, o.y, o.sm, o.si);
    kernels::batchnorm_fwd_infer(p, xs, gamma, beta, rm, rv, o.y_infer);
    kernels::batchnorm_bwd(p, xs, o.y, dys, gamma, o.sm, o.si, o.dx, o.dg, o.db, GradMode::Overwrite);
    cuda::device_synchronize(0);
    return o;
  };
  auto per_channel = [&] { return Tensor::empty({c}, DType::F32, gpu); };
  const Outputs a = run(x, dy,
                        {Tensor::empty(shape, dtype, gpu), Tensor::empty(shape, dtype, gpu),
                         Tensor::empty(shape, dtype, gpu), per_channel(), per_channel(), per_channel(), per_channel()});
  const Outputs v = run(xv, dyv,
                        {misaligned(shape, dtype), misaligned(shape, dtype), misaligned(shape, dtype), per_channel(),
                         per_channel(), per_channel(), per_channel()});
  EXPECT_EQ(first_difference(a.sm, v.sm), -1) << "save_mean";
  EXPECT_EQ(first_difference(a.si, v.si), -1) << "save_invstd";
  EXPECT_EQ(first_difference(a.y, v.y), -1) << "y (train)";
  EXPECT_EQ(first_difference(a.y_infer, v.y_infer), -1) << "y (inference)";
  EXPECT_EQ(first_difference(a.dx, v.dx), -1) << "dx";
  EXPECT_EQ(first_difference(a.dg, v.dg), -1) << "dgamma";
  EXPECT_EQ(first_difference(a.db, v.db), -1) << "dbeta";
}

TEST(BatchNormCuda, VectorPassesMatchScalarBitForBit) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 500;
  for (bool relu : {false, true}) {
    check_vector_parity({4, 14, 14, 64}, DType::F32, relu, seed += 10);
    check_vector_parity({4, 14, 14, 64}, DType::BF16, relu, seed += 10);
    check_vector_parity({4, 14, 14, 10}, DType::F32, relu, seed += 10);
    check_vector_parity({4, 14, 14, 10}, DType::BF16, relu, seed += 10);
  }
}

TEST(BatchNormCuda, RejectsMixedDevices) {
  GPPF_REQUIRE_GPU();
  const Tensor x = Tensor::zeros({4, 3}, DType::F32, Device::cuda(0));
  Tensor gamma = Tensor::zeros({3}, DType::F32), y = Tensor::empty({4, 3}, DType::F32, Device::cuda(0));
  EXPECT_THROW(kernels::batchnorm_fwd_infer(BatchNormParams{}, x, gamma, gamma, gamma, gamma, y), Error);
}

// Synchronised BN's halves on the GPU against the host: the per-channel sums (double, read back) and
// the input gradient from given coefficients, f32 and bf16, with and without the ReLU mask.
TEST(BatchNormCuda, SyncedHalvesMatchHost) {
  GPPF_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  for (const DType dtype : {DType::F32, DType::BF16})
    for (const bool relu : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + (relu ? " relu" : ""));
      const std::int64_t c = 24;
      const Shape shape{40, 3, c};
      const Tensor x = rounded(test::random_tensor(shape, 51, -1.0, 3.0), dtype);
      const Tensor y = rounded(test::random_tensor(shape, 52), dtype),
                   dy = rounded(test::random_tensor(shape, 53), dtype);
      const Tensor mean = test::random_tensor({c}, 54), invstd = test::random_tensor({c}, 55, 0.5, 2.0);
      const Tensor a = test::random_tensor({c}, 56), b = test::random_tensor({c}, 57), k = test::random_tensor({c}, 58);
      const Tensor x_d = on_device(x, dtype), y_d = on_device(y, dtype), dy_d = on_device(dy, dtype);
      const Tensor mean_d = mean.to(gpu), invstd_d = invstd.to(gpu);
      for (const bool bwd : {false, true}) {
        const std::vector<double> host =
            bwd ? kernels::batchnorm_channel_sums(relu, x, y, dy, mean, invstd)
                : kernels::batchnorm_channel_sums(false, x, Tensor(), Tensor(), Tensor(), Tensor());
        const std::vector<double> dev =
            bwd ? kernels::batchnorm_channel_sums(relu, x_d, y_d, dy_d, mean_d, invstd_d)
                : kernels::batchnorm_channel_sums(false, x_d, Tensor(), Tensor(), Tensor(), Tensor());
        ASSERT_EQ(host.size(), dev.size());
        for (std::size_t i = 0; i < host.size(); ++i) EXPECT_NEAR(dev[i], host[i], 1e-9 * (1 + std::abs(host[i])));
      }
      Tensor dx = Tensor::empty(shape, DType::F32), dx_d = Tensor::empty(shape, dtype, gpu);
      kernels::batchnorm_bwd_data(relu, x, y, dy, mean, a, b, k, dx);
      kernels::batchnorm_bwd_data(relu, x_d, y_d, dy_d, mean_d, a.to(gpu), b.to(gpu), k.to(gpu), dx_d);
      cuda::device_synchronize(0);
      EXPECT_LT(test::max_rel_error(kernels::cast(dx_d, DType::F32).to(Device::host()), dx),
                dtype == DType::F32 ? 1e-5 : 2e-2);
    }
}

}  // namespace
}  // namespace gppf
