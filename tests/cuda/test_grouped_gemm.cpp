// CUDA parity of kernels::grouped_gemm against the host (itself bit for bit kernels::gemm per problem):
// f32 (TF32 off) below 1e-3, bf16 inputs below 2e-2, every transposition, sizes of 0, per-problem beta
// with NaN ignored under beta = 0, narrow0 views, more than one pack, and the launch counts of
// kernels/grouped_gemm.hpp.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "core/counters.hpp"
#include "core/cuda_runtime.hpp"
#include "kernels/cast.hpp"
#include "kernels/grouped_gemm.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {
using test::launches_of;

using kernels::GemmProblem;

const Device kGpu = Device::cuda(0);

double tol(DType in, DType out) { return in == DType::F32 && out == DType::F32 ? 1e-3 : 2e-2; }

// Random host f32 values that are exactly representable in dt.
Tensor host_input(const Shape& shape, std::uint64_t seed, DType dt) {
  const Tensor x = test::random_tensor(shape, seed);
  return dt == DType::F32 ? x : kernels::cast(kernels::cast(x, dt), DType::F32);
}
Tensor to_gpu(const Tensor& host_f32, DType dt) { return kernels::cast(host_f32, dt).to(kGpu); }
Tensor back(const Tensor& t) {
  cuda::device_synchronize(0);
  return kernels::cast(t.to(Device::host()), DType::F32);
}

struct Dims {
  std::int64_t m, n, k;
  float beta;
};
const std::vector<Dims> kDims = {{5, 7, 3, 0.0f}, {17, 9, 33, 1.0f},  {0, 4, 2, 0.0f},     {3, 0, 5, 1.0f},
                                 {4, 6, 0, 0.0f}, {6, 4, 0, 1.0f},    {1, 1, 1, 1.0f},     {64, 31, 70, 0.0f},
                                 {2, 3, 4, 0.5f}, {33, 65, 17, 1.0f}, {130, 27, 129, 0.0f}};

std::int64_t live(const std::vector<Dims>& dims) {
  std::int64_t n = 0;
  for (const Dims& d : dims) n += d.m > 0 && d.n > 0 ? 1 : 0;
  return n;
}

TEST(GroupedGemmCuda, MatchesHostAllTranspositionsAndDtypes) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 0;
  for (const auto& [in, out] :
       {std::pair{DType::F32, DType::F32}, std::pair{DType::BF16, DType::F32}, std::pair{DType::BF16, DType::BF16}}) {
    for (const bool ta : {false, true}) {
      for (const bool tb : {false, true}) {
        SCOPED_TRACE(str(dtype_name(in), " -> ", dtype_name(out), " trans_a=", ta, " trans_b=", tb));
        std::vector<Tensor> ha, hb, hc, da, db, dc;
        for (const Dims& d : kDims) {
          ha.push_back(host_input(ta ? Shape{d.k, d.m} : Shape{d.m, d.k}, ++seed, in));
          hb.push_back(host_input(tb ? Shape{d.n, d.k} : Shape{d.k, d.n}, ++seed, in));
          hc.push_back(host_input({d.m, d.n}, ++seed, out));
          da.push_back(to_gpu(ha.back(), in));
          db.push_back(to_gpu(hb.back(), in));
          dc.push_back(to_gpu(hc.back(), out));
          if (d.beta == 0.0f && d.m * d.n > 0) {  // never read
            Tensor nan = Tensor::empty({d.m, d.n}, DType::F32);
            nan.fill_(std::numeric_limits<float>::quiet_NaN());
            dc.back() = to_gpu(nan, out);
          }
        }
        std::vector<GemmProblem> hp, dp;
        for (std::size_t i = 0; i < kDims.size(); ++i) {
          hp.push_back({&ha[i], &hb[i], &hc[i], kDims[i].beta});
          dp.push_back({&da[i], &db[i], &dc[i], kDims[i].beta});
        }
        kernels::grouped_gemm(ta, tb, 0.75f, hp);
        // bf16 inputs into f32 C: one cublasGemmEx (or fill/axpby) per live problem; else one pack.
        const std::int64_t want_launches = in != out ? live(kDims) : 2;
        EXPECT_EQ(launches_of([&] { kernels::grouped_gemm(ta, tb, 0.75f, dp); }), want_launches);
        for (std::size_t i = 0; i < kDims.size(); ++i) {
          const Tensor got = back(dc[i]);
          for (const float v : got.to_float_vector()) ASSERT_FALSE(std::isnan(v)) << "problem " << i;
          EXPECT_LT(test::max_rel_error(got, hc[i]), tol(in, out)) << "problem " << i;
        }
      }
    }
  }
}

// Stacked activations through each lego's weights into rows of a stacked output (narrow0 views), in
// more problems than one pack takes; rows outside every view stay as they were.
TEST(GroupedGemmCuda, ViewsInSeveralPacksMatchHost) {
  GPPF_REQUIRE_GPU();
  for (const DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    const int problems = 2 * kernels::kMaxGroupedProblems + 3;  // a quarter without rows: two packs
    const std::int64_t c_in = 24, c_out = 16, rows_total = 1 + 3 * problems + 2;
    const Tensor hx = host_input({rows_total, c_in}, 1, dt), hw = host_input({problems * c_out, c_in}, 2, dt);
    Tensor hy = host_input({rows_total, c_out}, 3, dt);
    const Tensor dx = to_gpu(hx, dt), dw = to_gpu(hw, dt);
    Tensor dy = to_gpu(hy, dt);
    std::vector<Tensor> hxs, hws, hys, dxs, dws, dys;
    std::int64_t at = 1;
    for (int i = 0; i < problems; ++i) {
      const std::int64_t rows = i % 4;  // 0 to 3 rows each
      hxs.push_back(hx.narrow0(at, rows));
      dxs.push_back(dx.narrow0(at, rows));
      hws.push_back(hw.narrow0(i * c_out, c_out));
      dws.push_back(dw.narrow0(i * c_out, c_out));
      hys.push_back(hy.narrow0(at, rows));
      dys.push_back(dy.narrow0(at, rows));
      at += rows;
    }
    std::vector<GemmProblem> hp, dp;
    std::int64_t live_problems = 0;
    for (std::size_t i = 0; i < hxs.size(); ++i) {
      const float beta = i % 3 == 0 ? 0.0f : 1.0f;
      hp.push_back({&hxs[i], &hws[i], &hys[i], beta});
      dp.push_back({&dxs[i], &dws[i], &dys[i], beta});
      live_problems += hxs[i].dim(0) > 0 ? 1 : 0;
    }
    kernels::grouped_gemm(false, true, 1.0f, hp);
    const std::int64_t packs = (live_problems + kernels::kMaxGroupedProblems - 1) / kernels::kMaxGroupedProblems;
    EXPECT_EQ(launches_of([&] { kernels::grouped_gemm(false, true, 1.0f, dp); }), 2 * packs);
    EXPECT_LT(test::max_rel_error(back(dy), hy), tol(dt, dt));
  }
}

TEST(GroupedGemmCuda, OperandsOnTwoDevicesAreRejected) {
  GPPF_REQUIRE_GPU();
  const Tensor ha = test::random_tensor({2, 3}, 1), hb = test::random_tensor({3, 4}, 2);
  const Tensor da = ha.to(kGpu), db = hb.to(kGpu);
  Tensor hc = Tensor::zeros({2, 4}, DType::F32), dc = hc.to(kGpu);
  try {
    kernels::grouped_gemm(false, false, 1.0f, {{&da, &db, &dc, 0.0f}, {&da, &db, &hc, 0.0f}});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("grouped_gemm: problem 1: C"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace gppf
