// CUDA parity of the element-wise, linear, resample and concat ops against the host backend (itself
// tested against kernels/ref): f32 below 1e-3 (TF32 off), bf16 below 2e-2. bf16 runs feed the host the
// same bf16-rounded inputs.
#include <gtest/gtest.h>

#include <cstring>

#include "core/cuda_runtime.hpp"
#include "kernels/cast.hpp"
#include "kernels/concat.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/linear.hpp"
#include "kernels/resample.hpp"
#include "kernels/routing.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::GradMode;

const Device kGpu = Device::cuda(0);
const DType kDtypes[] = {DType::F32, DType::BF16};

double tol(DType dt) { return dt == DType::F32 ? 1e-3 : 2e-2; }

// Random host f32 values that are exactly representable in dt.
Tensor host_input(const Shape& shape, std::uint64_t seed, DType dt, double lo = -1.0, double hi = 1.0) {
  const Tensor x = test::random_tensor(shape, seed, lo, hi);
  return dt == DType::F32 ? x : kernels::cast(kernels::cast(x, dt), DType::F32);
}
Tensor to_gpu(const Tensor& host_f32, DType dt) { return kernels::cast(host_f32, dt).to(kGpu); }
Tensor gpu_empty(const Shape& shape, DType dt) { return Tensor::empty(shape, dt, kGpu); }
Tensor back(const Tensor& t) {
  cuda::device_synchronize(0);
  return kernels::cast(t.to(Device::host()), DType::F32);
}

TEST(ElemCuda, PointwiseOpsMatchHost) {
  GPPF_REQUIRE_GPU();
  for (const DType dt : kDtypes) {
    const Shape shape = {3, 37, 29, 11};
    const Tensor a = host_input(shape, 1, dt), b = host_input(shape, 2, dt), old = host_input(shape, 3, dt);
    const Tensor da = to_gpu(a, dt), db = to_gpu(b, dt);
    Tensor hy = Tensor::empty(shape, DType::F32), dy = gpu_empty(shape, dt);

    kernels::relu_fwd(a, hy);
    kernels::relu_fwd(da, dy);
    EXPECT_LT(test::max_rel_error(back(dy), hy), tol(dt)) << "relu_fwd " << dtype_name(dt);
    for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
      Tensor hdx = old.clone(), ddx = to_gpu(old, dt);
      kernels::relu_bwd(hy, b, hdx, mode);
      kernels::relu_bwd(dy, db, ddx, mode);
      EXPECT_LT(test::max_rel_error(back(ddx), hdx), tol(dt)) << "relu_bwd " << dtype_name(dt);
    }
    kernels::add(a, b, hy);
    kernels::add(da, db, dy);
    EXPECT_LT(test::max_rel_error(back(dy), hy), tol(dt)) << "add " << dtype_name(dt);
    kernels::add_relu_fwd(a, b, hy);
    kernels::add_relu_fwd(da, db, dy);
    EXPECT_LT(test::max_rel_error(back(dy), hy), tol(dt)) << "add_relu_fwd " << dtype_name(dt);
    kernels::fill(hy, -1.5f);
    kernels::fill(dy, -1.5f);
    EXPECT_LT(test::max_rel_error(back(dy), hy), tol(dt)) << "fill " << dtype_name(dt);

    const Tensor halpha = Tensor::from_vector({1}, {0.75f});
    const Tensor dalpha = halpha.to(kGpu);
    for (const float beta : {0.0f, 0.5f}) {
      Tensor hyy = old.clone(), dyy = to_gpu(old, dt);
      kernels::axpby(-1.25f, a, beta, hyy);
      kernels::axpby(-1.25f, da, beta, dyy);
      EXPECT_LT(test::max_rel_error(back(dyy), hyy), tol(dt)) << "axpby " << dtype_name(dt);
      hyy = old.clone();
      dyy = to_gpu(old, dt);
      kernels::axpby_scalar(halpha, a, beta, hyy);
      kernels::axpby_scalar(dalpha, da, beta, dyy);
      EXPECT_LT(test::max_rel_error(back(dyy), hyy), tol(dt)) << "axpby_scalar " << dtype_name(dt);
      // a bf16 (or f32) x accumulated into an f32 buffer
      hyy = old.clone();
      dyy = old.to(kGpu);
      kernels::axpby(2.0f, a, beta, hyy);
      kernels::axpby(2.0f, da, beta, dyy);
      EXPECT_LT(test::max_rel_error(back(dyy), hyy), 1e-5) << "axpby into f32 " << dtype_name(dt);
    }
  }
}

TEST(ElemCuda, ReductionsMatchHostAndAreDeterministic) {
  GPPF_REQUIRE_GPU();
  for (const DType dt : kDtypes) {
    for (const std::int64_t n : {1, 5000, 1000003}) {
      const Tensor a = host_input({n}, 10, dt), b = host_input({n}, 11, dt, 0.0, 1.0);
      const Tensor da = to_gpu(a, dt), db = to_gpu(b, dt);
      for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
        Tensor hout = Tensor::from_vector({1}, {3.0f});
        Tensor dout = hout.to(kGpu);
        kernels::dot(a, b, hout, mode);
        kernels::dot(da, db, dout, mode);
        EXPECT_LT(test::max_rel_error(back(dout), hout), 1e-5) << "dot n=" << n << ' ' << dtype_name(dt);
      }
      Tensor o1 = Tensor::zeros({1}, DType::F32, kGpu), o2 = Tensor::zeros({1}, DType::F32, kGpu);
      kernels::dot(da, db, o1, GradMode::Overwrite);
      kernels::dot(da, db, o2, GradMode::Overwrite);
      const float v1 = back(o1).data_as<float>()[0], v2 = back(o2).data_as<float>()[0];
      EXPECT_EQ(std::memcmp(&v1, &v2, sizeof(float)), 0);
    }
    for (const Shape& shape : std::vector<Shape>{{7}, {300001, 3}, {4, 17, 19, 130}}) {
      const Tensor x = host_input(shape, 12, dt);
      const Tensor dx = to_gpu(x, dt);
      for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
        // f32 bias gradients from dt activations
        const Tensor old = test::random_tensor({shape.back()}, 13);
        Tensor hy = old.clone(), dy = old.to(kGpu);
        kernels::reduce_rows(x, hy, mode);
        kernels::reduce_rows(dx, dy, mode);
        EXPECT_LT(test::max_rel_error(back(dy), hy), 1e-5) << "reduce_rows " << shape_str(shape) << dtype_name(dt);
      }
    }
  }
}

TEST(ElemCuda, LinearAndGemmMatchHost) {
  GPPF_REQUIRE_GPU();
  ASSERT_FALSE(kernels::allow_tf32());
  for (const DType dt : kDtypes) {
    const std::int64_t n = 67, in = 129, out = 33;
    const Tensor x = host_input({n, in}, 20, dt), w = host_input({out, in}, 21, dt), bias = host_input({out}, 22, dt),
                 gy = host_input({n, out}, 23, dt);
    const Tensor dx_ = to_gpu(x, dt), dw_ = to_gpu(w, dt), dbias_ = to_gpu(bias, dt), dgy = to_gpu(gy, dt);
    for (const bool with_bias : {true, false}) {
      Tensor hy = Tensor::empty({n, out}, DType::F32), dy = gpu_empty({n, out}, dt);
      kernels::linear_fwd(x, w, with_bias ? bias : Tensor(), hy);
      kernels::linear_fwd(dx_, dw_, with_bias ? dbias_ : Tensor(), dy);
      EXPECT_LT(test::max_rel_error(back(dy), hy), tol(dt)) << "linear_fwd " << dtype_name(dt);
    }
    for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
      const Tensor old_dx = host_input({n, in}, 24, dt), old_dw = test::random_tensor({out, in}, 25),
                   old_db = test::random_tensor({out}, 26);
      Tensor hdx = old_dx.clone(), ddx = to_gpu(old_dx, dt);
      kernels::linear_bwd_data(gy, w, hdx, mode);
      kernels::linear_bwd_data(dgy, dw_, ddx, mode);
      EXPECT_LT(test::max_rel_error(back(ddx), hdx), tol(dt)) << "linear_bwd_data " << dtype_name(dt);
      // f32 parameter gradients (the master weights' dtype) from dt activations
      Tensor hdw = old_dw.clone(), ddw = old_dw.to(kGpu), hdb = old_db.clone(), ddb = old_db.to(kGpu);
      kernels::linear_bwd_weight(x, gy, hdw, &hdb, mode);
      kernels::linear_bwd_weight(dx_, dgy, ddw, &ddb, mode);
      EXPECT_LT(test::max_rel_error(back(ddw), hdw), 1e-3) << "linear_bwd_weight " << dtype_name(dt);
      EXPECT_LT(test::max_rel_error(back(ddb), hdb), 1e-5) << "linear dbias " << dtype_name(dt);
    }
    const std::int64_t m = 45, nn = 77, k = 53;
    for (const bool ta : {false, true})
      for (const bool tb : {false, true}) {
        const Tensor a = host_input(ta ? Shape{k, m} : Shape{m, k}, 30, dt);
        const Tensor b = host_input(tb ? Shape{nn, k} : Shape{k, nn}, 31, dt);
        const Tensor c0 = host_input({m, nn}, 32, dt);
        Tensor hc = c0.clone(), dc = to_gpu(c0, dt);
        kernels::gemm(ta, tb, 0.5f, a, b, -1.0f, hc);
        kernels::gemm(ta, tb, 0.5f, to_gpu(a, dt), to_gpu(b, dt), -1.0f, dc);
        EXPECT_LT(test::max_rel_error(back(dc), hc), tol(dt)) << "gemm ta=" << ta << " tb=" << tb << dtype_name(dt);
      }
  }
}

TEST(ElemCuda, UpsampleMatchesHost) {
  GPPF_REQUIRE_GPU();
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{2, 5, 7, 3}, {2, 10, 14, 3}}, {{1, 7, 5, 9}, {1, 15, 11, 9}}, {{1, 9, 13, 5}, {1, 4, 6, 5}}};
  for (const DType dt : kDtypes)
    for (const auto mode : {kernels::UpsampleMode::Nearest, kernels::UpsampleMode::Bilinear})
      for (const auto& [xs, ys] : cases) {
        const kernels::UpsampleParams p{mode};
        const Tensor x = host_input(xs, 40, dt), gy = host_input(ys, 41, dt), old = host_input(xs, 42, dt);
        Tensor hy = Tensor::empty(ys, DType::F32), dy = gpu_empty(ys, dt);
        kernels::upsample_fwd(p, x, hy);
        kernels::upsample_fwd(p, to_gpu(x, dt), dy);
        EXPECT_LT(test::max_rel_error(back(dy), hy), tol(dt)) << kernels::upsample_mode_name(mode) << dtype_name(dt);
        for (const GradMode gm : {GradMode::Overwrite, GradMode::Accumulate}) {
          Tensor hdx = old.clone(), ddx = to_gpu(old, dt);
          kernels::upsample_bwd(p, gy, hdx, gm);
          kernels::upsample_bwd(p, to_gpu(gy, dt), ddx, gm);
          EXPECT_LT(test::max_rel_error(back(ddx), hdx), tol(dt))
              << "upsample_bwd " << kernels::upsample_mode_name(mode) << dtype_name(dt);
        }
      }
}

TEST(ElemCuda, ConcatAndSplitMatchHost) {
  GPPF_REQUIRE_GPU();
  for (const DType dt : kDtypes) {
    const std::vector<std::int64_t> channels = {5, 64, 0, 3};
    std::vector<Tensor> hx, dxs;
    for (std::size_t i = 0; i < channels.size(); ++i) {
      hx.push_back(host_input({2, 9, 11, channels[i]}, 50 + i, dt));
      dxs.push_back(to_gpu(hx.back(), dt));
    }
    Tensor hy = Tensor::empty({2, 9, 11, 72}, DType::F32), dy = gpu_empty({2, 9, 11, 72}, dt);
    kernels::concat_channels(hx, hy);
    kernels::concat_channels(dxs, dy);
    EXPECT_EQ(test::max_rel_error(back(dy), hy), 0.0) << dtype_name(dt);
    for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
      std::vector<Tensor> hg, dg;
      for (std::size_t i = 0; i < channels.size(); ++i) {
        hg.push_back(host_input({2, 9, 11, channels[i]}, 60 + i, dt));
        dg.push_back(to_gpu(hg.back(), dt));
      }
      kernels::split_channels(hy, hg, mode);
      kernels::split_channels(dy, dg, mode);
      for (std::size_t i = 0; i < channels.size(); ++i)
        EXPECT_LT(test::max_rel_error(back(dg[i]), hg[i]), tol(dt)) << "split part " << i << dtype_name(dt);
    }
  }
}

// The router gradient stays on the device (no read-back mid-step): same double arithmetic as the host.
TEST(ElemCuda, RouterGradMatchesHost) {
  GPPF_REQUIRE_GPU();
  const kernels::RouterGradParams p{{-1, 1, 3}, {0.1f, 0.4f, 0.2f, 0.3f}};
  const Tensor dgate = Tensor::from_vector({3}, {2.0f, -0.5f, 1.25f});
  const Tensor old = Tensor::from_vector({4}, {0.5f, -1.0f, 2.0f, 0.0f});
  for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
    Tensor h = old.clone(), d = old.to(kGpu);
    kernels::router_grad(p, dgate, h, mode);
    kernels::router_grad(p, dgate.to(kGpu), d, mode);
    EXPECT_EQ(back(d).to_float_vector(), h.to_float_vector());
    kernels::add_router_values({1.0f, 2.0f, 3.0f, 4.0f}, h, mode);
    kernels::add_router_values({1.0f, 2.0f, 3.0f, 4.0f}, d, mode);
    EXPECT_EQ(back(d).to_float_vector(), h.to_float_vector());
  }
}

// Probabilities read from device memory (RouterGradParams::probs_at): the values there, not the host
// floats, bit for bit the host given the same values in its memory.
TEST(ElemCuda, RouterGradReadsProbabilitiesFromDeviceMemory) {
  GPPF_REQUIRE_GPU();
  const std::vector<float> stale = {0.25f, 0.25f, 0.25f, 0.25f}, probs = {0.1f, 0.4f, 0.2f, 0.3f};
  const Tensor dgate = Tensor::from_vector({3}, {2.0f, -0.5f, 1.25f});
  const Tensor old = Tensor::from_vector({4}, {0.5f, -1.0f, 2.0f, 0.0f});
  for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
    Tensor h = old.clone(), d = old.to(kGpu);
    kernels::router_grad({{-1, 1, 3}, stale, Tensor::from_vector({4}, probs)}, dgate, h, mode);
    kernels::router_grad({{-1, 1, 3}, stale, Tensor::from_vector({4}, probs).to(kGpu)}, dgate.to(kGpu), d, mode);
    EXPECT_EQ(back(d).to_float_vector(), h.to_float_vector());
    Tensor by_value = old.clone();
    kernels::router_grad({{-1, 1, 3}, probs}, dgate, by_value, mode);
    EXPECT_EQ(h.to_float_vector(), by_value.to_float_vector());
  }
}

TEST(ElemCuda, MixedDevicesAreRejected) {
  GPPF_REQUIRE_GPU();
  const Tensor a = Tensor::zeros({4}, DType::F32);
  Tensor y = Tensor::zeros({4}, DType::F32, kGpu);
  EXPECT_THROW(kernels::relu_fwd(a, y), Error);
  EXPECT_THROW(kernels::add(a, a, y), Error);
  Tensor i32 = Tensor::zeros({4}, DType::I32, kGpu);
  EXPECT_THROW(kernels::fill(i32, 0.0f), Error);
}

}  // namespace
}  // namespace gppf
