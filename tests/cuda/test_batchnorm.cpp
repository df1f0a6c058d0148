// CUDA batch norm against the host backend: f32 within 1e-3, bf16 within 2e-2 (the host runs in f32 on
// the same bf16-rounded inputs).
#include <gtest/gtest.h>

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

TEST(BatchNormCuda, RejectsMixedDevices) {
  GPPF_REQUIRE_GPU();
  const Tensor x = Tensor::zeros({4, 3}, DType::F32, Device::cuda(0));
  Tensor gamma = Tensor::zeros({3}, DType::F32), y = Tensor::empty({4, 3}, DType::F32, Device::cuda(0));
  EXPECT_THROW(kernels::batchnorm_fwd_infer(BatchNormParams{}, x, gamma, gamma, gamma, gamma, y), Error);
}

}  // namespace
}  // namespace gppf
