// conv2d on CUDA (cuDNN) against the host backend on the same inputs: f32 within 1e-3 (TF32 off),
// bf16 within 2e-2, forward and both backward passes, overwrite and accumulate, with bias in f32 or
// bf16. Inputs are rounded to the device dtype first, so only the arithmetic differs.
#include <gtest/gtest.h>

#include "kernels/cast.hpp"
#include "tests/conv/conv_cases.hpp"

namespace gppf::test {
namespace {

using kernels::GradMode;

struct Run {
  Tensor y, dx, dw, db;
};

// Host reference for the rounded inputs; x etc. are host f32 tensors already rounded to the dtype.
Run host_run(const ConvCase& c, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy, const Run& init,
             GradMode mode) {
  Run r{Tensor::empty(dy.shape(), DType::F32), init.dx.clone(), init.dw.clone(), init.db.clone()};
  kernels::conv2d_fwd(c.p, x, w, c.bias ? b : Tensor(), r.y);
  kernels::conv2d_bwd_data(c.p, dy, w, r.dx, mode);
  kernels::conv2d_bwd_filter(c.p, x, dy, r.dw, c.bias ? &r.db : nullptr, mode);
  return r;
}

Tensor dev(const Tensor& host_f32, DType dtype) { return kernels::cast(host_f32, dtype).to(Device::cuda(0)); }
// Rounds a host f32 tensor to dtype and back, so that host and device see the same values.
Tensor rounded(const Tensor& t, DType dtype) { return kernels::cast(kernels::cast(t, dtype), DType::F32); }

void check_case(const ConvCase& c, DType dtype, DType bias_dtype, double tol) {
  const auto g = kernels::conv2d_geometry("test", c.p, c.x, c.w());
  const Tensor x = rounded(random_tensor(c.x, 1), dtype), w = rounded(random_tensor(c.w(), 2), dtype);
  const Tensor b = rounded(random_tensor({g.k}, 3), bias_dtype), dy = rounded(random_tensor(g.y_shape(), 4), dtype);
  for (GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
    const char* tag = mode == GradMode::Accumulate ? "accumulate" : "overwrite";
    const Run init{Tensor(), rounded(random_tensor(c.x, 5), dtype), rounded(random_tensor(c.w(), 6), dtype),
                   rounded(random_tensor({g.k}, 7), bias_dtype)};
    const Run want = host_run(c, x, w, b, dy, init, mode);

    Tensor y = Tensor::zeros(g.y_shape(), dtype, Device::cuda(0));
    Tensor dx = dev(init.dx, dtype), dw = dev(init.dw, dtype), db = dev(init.db, bias_dtype);
    const Tensor xd = dev(x, dtype), wd = dev(w, dtype), dyd = dev(dy, dtype);
    kernels::conv2d_fwd(c.p, xd, wd, c.bias ? dev(b, bias_dtype) : Tensor(), y);
    kernels::conv2d_bwd_data(c.p, dyd, wd, dx, mode);
    kernels::conv2d_bwd_filter(c.p, xd, dyd, dw, c.bias ? &db : nullptr, mode);

    EXPECT_LT(max_rel_error(y.to(Device::host()), want.y), tol) << "fwd";
    EXPECT_LT(max_rel_error(dx.to(Device::host()), want.dx), tol) << "bwd_data " << tag;
    EXPECT_LT(max_rel_error(dw.to(Device::host()), want.dw), tol) << "bwd_filter dw " << tag;
    if (c.bias) {
      EXPECT_LT(max_rel_error(db.to(Device::host()), want.db), tol) << "bwd_filter dbias " << tag;
    }
  }
}

class ConvCuda : public testing::TestWithParam<ConvCase> {};

TEST_P(ConvCuda, F32MatchesHost) {
  GPPF_REQUIRE_GPU();
  ASSERT_FALSE(kernels::allow_tf32());
  check_case(GetParam(), DType::F32, DType::F32, 1e-3);
}

TEST_P(ConvCuda, Bf16MatchesHost) {
  GPPF_REQUIRE_GPU();
  check_case(GetParam(), DType::BF16, DType::BF16, 2e-2);
}

INSTANTIATE_TEST_SUITE_P(Cases, ConvCuda, testing::ValuesIn(conv_cases()), conv_case_name);

TEST(ConvCuda, Bf16ActivationsWithF32Bias) {
  GPPF_REQUIRE_GPU();
  for (const ConvCase& c : conv_cases())
    if (c.bias) check_case(c, DType::BF16, DType::F32, 2e-2);
}

TEST(ConvCuda, ResNetShapeF32AndBf16) {
  GPPF_REQUIRE_GPU();
  kernels::Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  const ConvCase c{"resnet_28x28x64", {4, 28, 28, 64}, 64, 3, 3, p, true};
  check_case(c, DType::F32, DType::F32, 1e-3);
  check_case(c, DType::BF16, DType::F32, 2e-2);
}

TEST(ConvCuda, RejectsF16AndMixedDtypes) {
  GPPF_REQUIRE_GPU();
  const kernels::Conv2dParams p;
  Tensor x = Tensor::zeros({1, 5, 5, 2}, DType::F16, Device::cuda(0));
  Tensor w = Tensor::zeros({3, 3, 3, 2}, DType::F16, Device::cuda(0));
  Tensor y = Tensor::zeros({1, 3, 3, 3}, DType::F16, Device::cuda(0));
  EXPECT_THROW(kernels::conv2d_fwd(p, x, w, Tensor(), y), Error);
  Tensor xb = Tensor::zeros({1, 5, 5, 2}, DType::BF16, Device::cuda(0));
  Tensor wf = Tensor::zeros({3, 3, 3, 2}, DType::F32, Device::cuda(0));
  Tensor yb = Tensor::zeros({1, 3, 3, 3}, DType::BF16, Device::cuda(0));
  EXPECT_THROW(kernels::conv2d_fwd(p, xb, wf, Tensor(), yb), Error);
  Tensor wh = Tensor::zeros({3, 3, 3, 2}, DType::BF16);
  EXPECT_THROW(kernels::conv2d_fwd(p, xb, wh, Tensor(), yb), Error);  // w on the host
}

}  // namespace
}  // namespace gppf::test
