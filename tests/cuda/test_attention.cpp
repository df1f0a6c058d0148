// CUDA GELU, softmax, bmm, attention and token pooling against the host backend (itself tested
// against kernels/ref): f32 within 1e-3 (TF32 off), bf16 within 2e-2 forward and 3e-2 for attention's
// gradients (bf16 probabilities and dS feed its GEMMs); the host runs in f32 on the same
// bf16-rounded inputs.
#include <gtest/gtest.h>

#include <string>

#include "core/cuda_runtime.hpp"
#include "kernels/attention.hpp"
#include "tests/common/util.hpp"
#include "tests/transformer/helpers.hpp"

namespace gppf {
namespace {

using kernels::BmmParams;
using kernels::GradMode;
using kernels::SdpaParams;

const Device kGpu = Device::cuda(0);

double tol_of(DType dtype) { return dtype == DType::F32 ? 1e-3 : 2e-2; }

Tensor input(const Shape& shape, std::uint64_t seed, DType dtype, double lo = -1.0, double hi = 1.0) {
  return test::rounded(test::random_tensor(shape, seed, lo, hi), dtype);
}

Tensor synced(const Tensor& t) {
  cuda::device_synchronize(0);
  return t;
}

TEST(GeluCuda, MatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 1;
  for (DType dtype : {DType::F32, DType::BF16})
    for (const Shape& shape : {Shape{3, 7}, Shape{8, 197, 384}}) {
      SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dtype));
      const Tensor x = input(shape, seed++, dtype, -6.0, 6.0), dy = input(shape, seed++, dtype);
      Tensor y = Tensor::empty(shape, DType::F32), dx = Tensor::empty(shape, DType::F32);
      kernels::gelu_fwd(x, y);
      kernels::gelu_bwd(x, dy, dx, GradMode::Overwrite);
      const Tensor x_d = test::on_device(x, dtype), dy_d = test::on_device(dy, dtype);
      Tensor y_d = Tensor::empty(shape, dtype, kGpu), dx_d = Tensor::empty(shape, dtype, kGpu);
      kernels::gelu_fwd(x_d, y_d);
      kernels::gelu_bwd(x_d, dy_d, dx_d, GradMode::Overwrite);
      EXPECT_LT(test::max_rel_error(synced(y_d), y), tol_of(dtype));
      EXPECT_LT(test::max_rel_error(synced(dx_d), dx), tol_of(dtype));
      kernels::gelu_bwd(x_d, dy_d, dx_d, GradMode::Accumulate);
      EXPECT_LT(test::max_rel_error(synced(dx_d), test::plus(test::to_double(dx), test::to_double(dx))), tol_of(dtype));
    }
}

TEST(SoftmaxCuda, MatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 100;
  for (DType dtype : {DType::F32, DType::BF16})
    // Rows shorter than, as long as and longer than a warp; attention's 197 tokens; long rows.
    for (const Shape& shape :
         {Shape{5, 1}, Shape{7, 31}, Shape{3, 32}, Shape{4, 33}, Shape{2, 12, 197, 197}, Shape{3, 1030}}) {
      SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dtype));
      const Tensor x = input(shape, seed++, dtype, -8.0, 8.0), dy = input(shape, seed++, dtype);
      Tensor y = Tensor::empty(shape, DType::F32), dx = Tensor::empty(shape, DType::F32);
      kernels::softmax_fwd(x, y);
      kernels::softmax_bwd(test::rounded(y, dtype), dy, dx);
      Tensor xy_d = test::on_device(x, dtype), g_d = test::on_device(dy, dtype);
      kernels::softmax_fwd(xy_d, xy_d);  // in place
      EXPECT_LT(test::max_rel_error(synced(xy_d), y), tol_of(dtype));
      kernels::softmax_bwd(xy_d, g_d, g_d);  // in place
      EXPECT_LT(test::max_rel_error(synced(g_d), dx), tol_of(dtype));
    }
}

void check_bmm(const BmmParams& p, DType in, DType out, std::uint64_t seed) {
  SCOPED_TRACE(std::string(p.trans_a ? "A^T " : "") + (p.trans_b ? "B^T " : "") + dtype_name(in) + " -> " +
               dtype_name(out) + " beta " + std::to_string(p.beta));
  const std::int64_t m = 37, n = 45, k = 70;  // 2 x 3 GEMMs
  const Tensor a = input(p.trans_a ? Shape{2, 3, k, m} : Shape{2, 3, m, k}, seed, in);
  const Tensor b = input(p.trans_b ? Shape{2, 3, n, k} : Shape{2, 3, k, n}, seed + 1, in);
  const Tensor c0 = input({2, 3, m, n}, seed + 2, out);
  Tensor c = c0.clone();
  kernels::bmm(p, a, b, c);
  Tensor c_d = test::on_device(c0, out);
  kernels::bmm(p, test::on_device(a, in), test::on_device(b, in), c_d);
  EXPECT_LT(test::max_rel_error(synced(c_d), c), out == DType::F32 ? 1e-3 : 2e-2);
}

TEST(BmmCuda, MatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 200;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_bmm({ta, tb, 1.0f, 0.0f}, DType::F32, DType::F32, seed += 10);
      check_bmm({ta, tb, 0.5f, 1.5f}, DType::BF16, DType::F32, seed += 10);
      check_bmm({ta, tb, 1.0f, 0.0f}, DType::BF16, DType::BF16, seed += 10);
    }
}

void check_sdpa(std::int64_t n, std::int64_t h, std::int64_t tq, std::int64_t tk, std::int64_t dh, std::int64_t dv,
                DType dtype, std::uint64_t seed) {
  SCOPED_TRACE("N " + std::to_string(n) + " H " + std::to_string(h) + " Tq " + std::to_string(tq) + " Tk " +
               std::to_string(tk) + " Dh " + std::to_string(dh) + " Dv " + std::to_string(dv) + " " +
               dtype_name(dtype));
  const double tol = tol_of(dtype), grad_tol = dtype == DType::F32 ? 1e-3 : 3e-2;
  const Tensor q = input({n, h, tq, dh}, seed, dtype, -2.0, 2.0), k = input({n, h, tk, dh}, seed + 1, dtype, -2.0, 2.0);
  const Tensor v = input({n, h, tk, dv}, seed + 2, dtype), dout = input({n, h, tq, dv}, seed + 3, dtype);
  const SdpaParams p;
  Tensor out = Tensor::empty({n, h, tq, dv}, DType::F32), probs = Tensor::empty({n, h, tq, tk}, DType::F32);
  kernels::sdpa_fwd(p, q, k, v, out, probs);
  Tensor dq = Tensor::empty(q.shape(), DType::F32), dk = Tensor::empty(k.shape(), DType::F32),
         dvh = Tensor::empty(v.shape(), DType::F32);
  kernels::sdpa_bwd(p, q, k, v, probs, dout, dq, dk, dvh);

  const Tensor q_d = test::on_device(q, dtype), k_d = test::on_device(k, dtype), v_d = test::on_device(v, dtype),
               dout_d = test::on_device(dout, dtype);
  Tensor out_d = Tensor::empty(out.shape(), dtype, kGpu), probs_d = Tensor::empty(probs.shape(), dtype, kGpu);
  kernels::sdpa_fwd(p, q_d, k_d, v_d, out_d, probs_d);
  EXPECT_LT(test::max_rel_error(synced(out_d), out), tol);
  EXPECT_LT(test::max_rel_error(probs_d, probs), tol);
  Tensor dq_d = Tensor::empty(q.shape(), dtype, kGpu), dk_d = Tensor::empty(k.shape(), dtype, kGpu),
         dv_d = Tensor::empty(v.shape(), dtype, kGpu);
  kernels::sdpa_bwd(p, q_d, k_d, v_d, probs_d, dout_d, dq_d, dk_d, dv_d);
  EXPECT_LT(test::max_rel_error(synced(dq_d), dq), grad_tol);
  EXPECT_LT(test::max_rel_error(dk_d, dk), grad_tol);
  EXPECT_LT(test::max_rel_error(dv_d, dvh), grad_tol);
}

TEST(SdpaCuda, MatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 300;
  for (DType dtype : {DType::F32, DType::BF16}) {
    check_sdpa(2, 3, 5, 5, 8, 8, dtype, seed += 10);
    check_sdpa(1, 2, 3, 7, 4, 6, dtype, seed += 10);        // Tq != Tk, Dv != Dh
    check_sdpa(4, 6, 197, 197, 64, 64, dtype, seed += 10);  // ViT-S/16 at 224 px, 4 images
  }
}

TEST(SdpaCuda, SideStreamAndWorkspaceReuse) {
  GPPF_REQUIRE_GPU();
  // Backward right after a forward of another size on a side stream: the workspace grows between the
  // calls and the stream orders them.
  const Stream s = cuda::create_stream(0);
  const Tensor q = input({2, 2, 50, 16}, 1, DType::BF16, -2.0, 2.0), v = input({2, 2, 50, 16}, 2, DType::BF16);
  Tensor out = Tensor::empty({2, 2, 50, 16}, DType::F32), probs = Tensor::empty({2, 2, 50, 50}, DType::F32);
  kernels::sdpa_fwd({}, q, q, v, out, probs);
  const Tensor q_d = test::on_device(q, DType::BF16), v_d = test::on_device(v, DType::BF16);
  Tensor out_d = Tensor::empty(out.shape(), DType::BF16, kGpu),
         probs_d = Tensor::empty(probs.shape(), DType::BF16, kGpu);
  kernels::sdpa_fwd({}, q_d, q_d, v_d, out_d, probs_d, s);
  Tensor dq_d = Tensor::empty(q.shape(), DType::BF16, kGpu), dk_d = Tensor::empty(q.shape(), DType::BF16, kGpu),
         dv_d = Tensor::empty(q.shape(), DType::BF16, kGpu);
  kernels::sdpa_bwd({}, q_d, q_d, v_d, probs_d, out_d, dq_d, dk_d, dv_d, s);
  cuda::synchronize(s);
  EXPECT_LT(test::max_rel_error(out_d, out), 2e-2);
  cuda::destroy_stream(s);
}

TEST(TokenPoolCuda, MatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 400;
  for (DType dtype : {DType::F32, DType::BF16})
    for (const Shape& shape : {Shape{2, 5, 7}, Shape{16, 197, 384}}) {
      SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dtype));
      const Tensor x = input(shape, seed++, dtype), dy = input({shape[0], shape[2]}, seed++, dtype);
      Tensor y = Tensor::empty({shape[0], shape[2]}, DType::F32), dx = Tensor::empty(shape, DType::F32);
      kernels::token_meanpool_fwd(x, y);
      kernels::token_meanpool_bwd(dy, dx, GradMode::Overwrite);
      Tensor y_d = Tensor::empty(y.shape(), dtype, kGpu), dx_d = Tensor::empty(shape, dtype, kGpu);
      kernels::token_meanpool_fwd(test::on_device(x, dtype), y_d);
      kernels::token_meanpool_bwd(test::on_device(dy, dtype), dx_d, GradMode::Overwrite);
      EXPECT_LT(test::max_rel_error(synced(y_d), y), tol_of(dtype));
      EXPECT_LT(test::max_rel_error(dx_d, dx), tol_of(dtype));
    }
}

TEST(AttentionCuda, RejectsMixedDevices) {
  GPPF_REQUIRE_GPU();
  const Tensor a = Tensor::zeros({2, 3, 4}, DType::F32, kGpu), b = Tensor::zeros({2, 4, 5}, DType::F32);
  Tensor c = Tensor::empty({2, 3, 5}, DType::F32, kGpu);
  test::expect_error_names([&] { kernels::bmm({}, a, b, c); }, "bmm", "B");
}

}  // namespace
}  // namespace gppf
