// CUDA layer norm against the host backend (itself tested against kernels/ref): f32 within 1e-3, bf16
// within 2e-2 (the host runs in f32 on the same bf16-rounded inputs); rows shorter and longer than a
// warp, many rows (several row slices of the parameter gradients), both gradient modes, a side stream.
#include <gtest/gtest.h>

#include <string>

#include "core/cuda_runtime.hpp"
#include "kernels/layernorm.hpp"
#include "tests/common/util.hpp"
#include "tests/transformer/helpers.hpp"

namespace gppf {
namespace {

using kernels::GradMode;
using kernels::LayerNormParams;

void check_layernorm(const Shape& shape, DType dtype, std::uint64_t seed, const Stream& s = Stream::host()) {
  SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dtype) + (s.handle ? " side stream" : ""));
  const double tol = dtype == DType::F32 ? 1e-3 : 2e-2;
  const std::int64_t d = shape.back(), rows = shape_numel(shape) / d;
  const Device gpu = Device::cuda(0);
  LayerNormParams p;
  p.eps = 1e-6f;
  const Tensor x = test::rounded(test::random_tensor(shape, seed, -1.0, 3.0), dtype);
  const Tensor gamma = test::random_tensor({d}, seed + 1, 0.5, 1.5), beta = test::random_tensor({d}, seed + 2);
  const Tensor dy = test::rounded(test::random_tensor(shape, seed + 3), dtype);
  Tensor y = Tensor::empty(shape, DType::F32), m = Tensor::empty({rows}, DType::F32),
         is = Tensor::empty({rows}, DType::F32);
  kernels::layernorm_fwd(p, x, gamma, beta, y, m, is);
  Tensor dx = Tensor::empty(shape, DType::F32), dg = Tensor::empty({d}, DType::F32),
         db = Tensor::empty({d}, DType::F32);
  kernels::layernorm_bwd(x, dy, gamma, m, is, dx, dg, db, GradMode::Overwrite);

  const Tensor x_d = test::on_device(x, dtype), dy_d = test::on_device(dy, dtype), gamma_d = gamma.to(gpu),
               beta_d = beta.to(gpu);
  Tensor y_d = Tensor::empty(shape, dtype, gpu), m_d = Tensor::empty({rows}, DType::F32, gpu),
         is_d = Tensor::empty({rows}, DType::F32, gpu);
  kernels::layernorm_fwd(p, x_d, gamma_d, beta_d, y_d, m_d, is_d, s);
  Tensor dx_d = Tensor::empty(shape, dtype, gpu), dg_d = Tensor::empty({d}, DType::F32, gpu),
         db_d = Tensor::empty({d}, DType::F32, gpu);
  kernels::layernorm_bwd(x_d, dy_d, gamma_d, m_d, is_d, dx_d, dg_d, db_d, GradMode::Overwrite, s);
  cuda::device_synchronize(0);
  EXPECT_LT(test::max_rel_error(y_d, y), tol);
  EXPECT_LT(test::max_rel_error(m_d, m), 1e-3);
  EXPECT_LT(test::max_rel_error(is_d, is), 1e-3);
  EXPECT_LT(test::max_rel_error(dx_d, dx), tol);
  EXPECT_LT(test::max_rel_error(dg_d, dg), 1e-3);
  EXPECT_LT(test::max_rel_error(db_d, db), 1e-3);
  // Accumulate adds this call's parameter gradients to the ones already there: twice the single result.
  kernels::layernorm_bwd(x_d, dy_d, gamma_d, m_d, is_d, dx_d, dg_d, db_d, GradMode::Accumulate, s);
  cuda::device_synchronize(0);
  EXPECT_LT(test::max_rel_error(dg_d, test::plus(test::to_double(dg), test::to_double(dg))), 1e-3);
  EXPECT_LT(test::max_rel_error(db_d, test::plus(test::to_double(db), test::to_double(db))), 1e-3);
}

TEST(LayerNormCuda, MatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 1;
  for (DType dtype : {DType::F32, DType::BF16})
    for (const Shape& shape :
         {Shape{17, 3}, Shape{3, 5, 32}, Shape{2, 7, 33}, Shape{8, 197, 768}, Shape{5, 1030}, Shape{4096, 24}})
      check_layernorm(shape, dtype, seed += 10);
}

TEST(LayerNormCuda, SideStream) {
  GPPF_REQUIRE_GPU();
  const Stream s = cuda::create_stream(0);
  check_layernorm({6, 50, 96}, DType::BF16, 500, s);
  cuda::destroy_stream(s);
}

TEST(LayerNormCuda, SameBitsEveryRun) {
  GPPF_REQUIRE_GPU();
  const Shape shape{64, 197, 64};
  const Device gpu = Device::cuda(0);
  const Tensor x = test::random_tensor(shape, 600).to(gpu), dy = test::random_tensor(shape, 601).to(gpu);
  const Tensor gamma = test::random_tensor({64}, 602).to(gpu), beta = test::random_tensor({64}, 603).to(gpu);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    Tensor y = Tensor::empty(shape, DType::F32, gpu), m = Tensor::empty({64, 197}, DType::F32, gpu),
           is = Tensor::empty({64, 197}, DType::F32, gpu), dx = Tensor::empty(shape, DType::F32, gpu),
           dg = Tensor::empty({64}, DType::F32, gpu), db = Tensor::empty({64}, DType::F32, gpu);
    kernels::layernorm_fwd(LayerNormParams{}, x, gamma, beta, y, m, is);
    kernels::layernorm_bwd(x, dy, gamma, m, is, dx, dg, db, GradMode::Overwrite);
    cuda::device_synchronize(0);
    std::vector<float> all;
    for (const Tensor* t : {&y, &dx, &dg, &db}) {
      const auto v = t->to_float_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
    if (run == 0)
      first = all;
    else
      EXPECT_EQ(all, first);
  }
}

TEST(LayerNormCuda, RejectsMixedDevices) {
  GPPF_REQUIRE_GPU();
  const Tensor x = Tensor::zeros({4, 3}, DType::F32, Device::cuda(0));
  const Tensor gamma = Tensor::zeros({3}, DType::F32);
  Tensor y = Tensor::empty({4, 3}, DType::F32, Device::cuda(0)), m = Tensor::empty({4}, DType::F32, Device::cuda(0));
  test::expect_error_names([&] { kernels::layernorm_fwd(LayerNormParams{}, x, gamma, gamma, y, m, m); },
                           "layernorm_fwd", "gamma");
}

}  // namespace
}  // namespace gppf
