// CUDA pooling against the host backend: f32 within 1e-3, bf16 within 2e-2 (the host runs in f32 on
// the same bf16-rounded inputs).
#include <gtest/gtest.h>

#include <string>

#include "core/cuda_runtime.hpp"
#include "kernels/cast.hpp"
#include "kernels/pool.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::GradMode;
using kernels::Pool2dParams;

Tensor on_device(const Tensor& host_f32, DType dtype) { return kernels::cast(host_f32, dtype).to(Device::cuda(0)); }
Tensor rounded(const Tensor& host_f32, DType dtype) {
  return kernels::cast(kernels::cast(host_f32, dtype), DType::F32);
}

Pool2dParams pool(int k, int s, int pad, bool include_pad = false) {
  Pool2dParams p;
  p.kernel_h = p.kernel_w = k;
  p.stride_h = p.stride_w = s;
  p.pad_h = p.pad_w = pad;
  p.count_include_pad = include_pad;
  return p;
}

void check_pool(const Shape& xs, const Pool2dParams& p, DType dtype, std::uint64_t seed) {
  SCOPED_TRACE(shape_str(xs) + " " + dtype_name(dtype) + " k" + std::to_string(p.kernel_h) + " s" +
               std::to_string(p.stride_h) + " p" + std::to_string(p.pad_h) + (p.count_include_pad ? " incl" : ""));
  const double tol = dtype == DType::F32 ? 1e-3 : 2e-2;
  const Device gpu = Device::cuda(0);
  const Shape ys = kernels::pool2d_output_shape(p, xs);
  const Tensor x = rounded(test::random_tensor(xs, seed), dtype),
               dy = rounded(test::random_tensor(ys, seed + 1), dtype);
  const Tensor x_d = on_device(x, dtype), dy_d = on_device(dy, dtype);
  Tensor y = Tensor::empty(ys, DType::F32), dx = Tensor::empty(xs, DType::F32);
  Tensor y_d = Tensor::empty(ys, dtype, gpu), dx_d = Tensor::empty(xs, dtype, gpu);

  kernels::maxpool2d_fwd(p, x, y);
  kernels::maxpool2d_fwd(p, x_d, y_d);
  cuda::device_synchronize(0);
  EXPECT_LT(test::max_rel_error(y_d, y), tol) << "max fwd";
  kernels::maxpool2d_bwd(p, x, y, dy, dx);
  kernels::maxpool2d_bwd(p, x_d, y_d, dy_d, dx_d);
  cuda::device_synchronize(0);
  EXPECT_LT(test::max_rel_error(dx_d, dx), tol) << "max bwd";

  kernels::avgpool2d_fwd(p, x, y);
  kernels::avgpool2d_fwd(p, x_d, y_d);
  cuda::device_synchronize(0);
  EXPECT_LT(test::max_rel_error(y_d, y), tol) << "avg fwd";
  kernels::avgpool2d_bwd(p, dy, dx);
  kernels::avgpool2d_bwd(p, dy_d, dx_d);
  cuda::device_synchronize(0);
  EXPECT_LT(test::max_rel_error(dx_d, dx), tol) << "avg bwd";
}

TEST(PoolCuda, MatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 1;
  for (DType dtype : {DType::F32, DType::BF16})
    for (const auto& p : {pool(2, 2, 0), pool(3, 2, 1), pool(3, 2, 1, true), pool(3, 1, 1), pool(5, 3, 2)})
      for (const Shape& xs : {Shape{3, 5, 7, 5}, Shape{4, 28, 28, 64}, Shape{2, 9, 8, 70}})
        check_pool(xs, p, dtype, seed += 10);
}

TEST(PoolCuda, TiesGoToTheFirstMaximum) {
  GPPF_REQUIRE_GPU();
  const Tensor x = Tensor::from_vector({1, 2, 2, 1}, {1, 1, 1, 1}).to(Device::cuda(0));
  const Tensor dy = Tensor::from_vector({1, 1, 1, 1}, {3}).to(Device::cuda(0));
  Tensor y = Tensor::empty({1, 1, 1, 1}, DType::F32, Device::cuda(0)),
         dx = Tensor::empty({1, 2, 2, 1}, DType::F32, Device::cuda(0));
  kernels::maxpool2d_fwd(Pool2dParams{}, x, y);
  kernels::maxpool2d_bwd(Pool2dParams{}, x, y, dy, dx);
  cuda::device_synchronize(0);
  EXPECT_EQ(dx.to_float_vector(), (std::vector<float>{3, 0, 0, 0}));
}

TEST(GlobalAvgPoolCuda, MatchesHost) {
  GPPF_REQUIRE_GPU();
  for (DType dtype : {DType::F32, DType::BF16})
    for (const Shape& xs : {Shape{3, 5, 7, 5}, Shape{32, 7, 7, 2048}, Shape{2, 9, 11, 70}}) {
      SCOPED_TRACE(shape_str(xs) + " " + dtype_name(dtype));
      const double tol = dtype == DType::F32 ? 1e-3 : 2e-2;
      const Tensor x = rounded(test::random_tensor(xs, 5), dtype);
      const Tensor dy = rounded(test::random_tensor({xs[0], xs[3]}, 6), dtype);
      Tensor y = Tensor::empty({xs[0], xs[3]}, DType::F32), y_d = Tensor::empty({xs[0], xs[3]}, dtype, Device::cuda(0));
      kernels::global_avgpool_fwd(x, y);
      kernels::global_avgpool_fwd(on_device(x, dtype), y_d);
      cuda::device_synchronize(0);
      EXPECT_LT(test::max_rel_error(y_d, y), tol);
      const Tensor base = rounded(test::random_tensor(xs, 7), dtype);
      Tensor dx = base.clone(), dx_d = on_device(base, dtype);
      kernels::global_avgpool_bwd(dy, dx, GradMode::Accumulate);
      kernels::global_avgpool_bwd(on_device(dy, dtype), dx_d, GradMode::Accumulate);
      cuda::device_synchronize(0);
      EXPECT_LT(test::max_rel_error(dx_d, dx), tol);
      kernels::global_avgpool_bwd(dy, dx, GradMode::Overwrite);
      kernels::global_avgpool_bwd(on_device(dy, dtype), dx_d, GradMode::Overwrite);
      cuda::device_synchronize(0);
      EXPECT_LT(test::max_rel_error(dx_d, dx), tol);
    }
}

}  // namespace
}  // namespace gppf
