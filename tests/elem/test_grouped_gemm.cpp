// kernels::grouped_gemm on the host: bit for bit what kernels::gemm gives on each problem (every
// transposition, sizes of 0, per-problem beta with NaN ignored under beta = 0, narrow0 views of
// stacked tensors), the launch counts, and one-line errors that name the problem and the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include "core/counters.hpp"
#include "kernels/grouped_gemm.hpp"
#include "kernels/linear.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {
using test::error_of;
using test::launches_of;

using kernels::GemmProblem;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Dims {
  std::int64_t m, n, k;
  float beta;
};

bool same_bits(const Tensor& a, const Tensor& b) {
  // An empty tensor has no storage (memcmp must not see its null pointer).
  return a.shape() == b.shape() && (a.nbytes() == 0 || std::memcmp(a.data(), b.data(), a.nbytes()) == 0);
}

// Throws one line that contains every piece of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  const std::string msg = error_of(f);
  EXPECT_FALSE(msg.empty()) << "no error";
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << msg << "' lacks " << p;
}

// Operands of each problem, C random (NaN where beta = 0: never read).
struct Case {
  std::vector<Tensor> a, b, c;
  Case(bool ta, bool tb, const std::vector<Dims>& dims, std::uint64_t seed) {
    for (const Dims& d : dims) {
      a.push_back(test::random_tensor(ta ? Shape{d.k, d.m} : Shape{d.m, d.k}, ++seed));
      b.push_back(test::random_tensor(tb ? Shape{d.n, d.k} : Shape{d.k, d.n}, ++seed));
      c.push_back(test::random_tensor({d.m, d.n}, ++seed));
      if (d.beta == 0.0f && c.back().numel() > 0) c.back().fill_(kNaN);
    }
  }
  std::vector<GemmProblem> problems(const std::vector<Dims>& dims, std::vector<Tensor>& out) const {
    std::vector<GemmProblem> p;
    for (std::size_t i = 0; i < dims.size(); ++i) p.push_back({&a[i], &b[i], &out[i], dims[i].beta});
    return p;
  }
};

const std::vector<Dims> kDims = {{5, 7, 3, 0.0f}, {17, 9, 33, 1.0f},  {0, 4, 2, 0.0f}, {3, 0, 5, 1.0f},
                                 {4, 6, 0, 0.0f}, {6, 4, 0, 1.0f},    {1, 1, 1, 1.0f}, {64, 31, 70, 0.0f},
                                 {2, 3, 4, 0.5f}, {33, 65, 17, 1.0f}, {0, 0, 0, 0.0f}};

TEST(GroupedGemm, MatchesGemmPerProblemBitForBitAllTranspositions) {
  std::uint64_t seed = 100;
  for (const bool ta : {false, true}) {
    for (const bool tb : {false, true}) {
      SCOPED_TRACE(str("trans_a=", ta, " trans_b=", tb));
      const Case cs(ta, tb, kDims, seed += 100);
      std::vector<Tensor> want, got;
      for (const Tensor& c : cs.c) {
        want.push_back(c.clone());
        got.push_back(c.clone());
      }
      for (std::size_t i = 0; i < kDims.size(); ++i)
        kernels::gemm(ta, tb, 0.75f, cs.a[i], cs.b[i], kDims[i].beta, want[i]);
      kernels::grouped_gemm(ta, tb, 0.75f, cs.problems(kDims, got));
      for (std::size_t i = 0; i < kDims.size(); ++i) {
        EXPECT_TRUE(same_bits(got[i], want[i])) << "problem " << i;
        for (const float v : got[i].to_float_vector()) ASSERT_FALSE(std::isnan(v)) << "problem " << i;
      }
    }
  }
}

// The lego layer's use: rows of stacked activations [N, C] through each lego's weights [K, C] into rows
// of a stacked output, all narrow0 views; rows outside every view stay as they were.
TEST(GroupedGemm, ViewsOfStackedTensorsMatchGemm) {
  const std::int64_t c_in = 8, c_out = 6;
  const std::vector<std::int64_t> rows = {5, 0, 10, 15};
  const Tensor x = test::random_tensor({32, c_in}, 1);
  const Tensor w = test::random_tensor({4 * c_out, c_in}, 2);  // the legos' weights, stacked
  const Tensor y0 = test::random_tensor({32, c_out}, 3);
  Tensor want = y0.clone(), got = y0.clone();
  std::vector<Tensor> xs, ws, ys_want, ys_got;
  std::int64_t at = 1;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    xs.push_back(x.narrow0(at, rows[i]));
    ws.push_back(w.narrow0(static_cast<std::int64_t>(i) * c_out, c_out));
    ys_want.push_back(want.narrow0(at, rows[i]));
    ys_got.push_back(got.narrow0(at, rows[i]));
    at += rows[i];
  }
  std::vector<GemmProblem> problems;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const float beta = i % 2 == 0 ? 0.0f : 1.0f;
    kernels::gemm(false, true, 1.0f, xs[i], ws[i], beta, ys_want[i]);
    problems.push_back({&xs[i], &ws[i], &ys_got[i], beta});
  }
  kernels::grouped_gemm(false, true, 1.0f, problems);
  EXPECT_TRUE(same_bits(got, want));
  EXPECT_EQ(got.narrow0(0, 1).to_float_vector(), y0.narrow0(0, 1).to_float_vector());
  EXPECT_EQ(got.narrow0(at, 32 - at).to_float_vector(), y0.narrow0(at, 32 - at).to_float_vector());
}

// Counted as CUDA launches them (kernels/grouped_gemm.hpp): per pack of kMaxGroupedProblems live
// problems, the pointer kernel and the grouped cuBLAS call; nothing when no problem is live.
TEST(GroupedGemm, LaunchCounts) {
  const Case cs(false, false, kDims, 7);
  std::vector<Tensor> out = cs.c;
  const auto all = cs.problems(kDims, out);
  EXPECT_EQ(launches_of([&] { kernels::grouped_gemm(false, false, 1.0f, all); }), 2);
  EXPECT_EQ(launches_of([&] { kernels::grouped_gemm(false, false, 1.0f, {}); }), 0);
  // m = 0, n = 0, and m = n = k = 0: nothing to do.
  const std::vector<GemmProblem> none = {all[2], all[3], all[10]};
  EXPECT_EQ(launches_of([&] { kernels::grouped_gemm(false, false, 1.0f, none); }), 0);
  // k = 0 only: still the grouped call (C = beta * C).
  const std::vector<GemmProblem> scale = {all[4], all[5]};
  EXPECT_EQ(launches_of([&] { kernels::grouped_gemm(false, false, 1.0f, scale); }), 2);

  const int many = kernels::kMaxGroupedProblems + 2;
  const Tensor a = test::random_tensor({2, 3}, 8), b = test::random_tensor({3, 4}, 9);
  Tensor c = Tensor::zeros({many * 2, 4}, DType::F32), want = c.clone();
  std::vector<Tensor> cs_got, cs_want;
  for (int i = 0; i < many; ++i) {
    cs_got.push_back(c.narrow0(2 * i, 2));
    cs_want.push_back(want.narrow0(2 * i, 2));
  }
  std::vector<GemmProblem> problems;
  for (int i = 0; i < many; ++i) {
    problems.push_back({&a, &b, &cs_got[static_cast<std::size_t>(i)], 1.0f});
    kernels::gemm(false, false, 1.0f, a, b, 1.0f, cs_want[static_cast<std::size_t>(i)]);
  }
  EXPECT_EQ(launches_of([&] { kernels::grouped_gemm(false, false, 1.0f, problems); }), 4);
  EXPECT_TRUE(same_bits(c, want));
}

TEST(GroupedGemm, BadArgumentsGiveOneLineErrorsNamingProblemAndTensor) {
  const Tensor a = test::random_tensor({4, 3}, 1), b = test::random_tensor({3, 5}, 2);
  const Tensor b_bad = test::random_tensor({4, 5}, 3), a3 = test::random_tensor({2, 4, 3}, 4);
  const Tensor undefined;
  Tensor c = test::random_tensor({4, 5}, 5), c2 = test::random_tensor({4, 5}, 6),
         c_bad = test::random_tensor({4, 6}, 7);
  const Tensor c_before = c.clone();
  const auto run = [](std::vector<GemmProblem> p) { return [p] { kernels::grouped_gemm(false, false, 1.0f, p); }; };

  expect_error(run({{&a, &b, &c, 0.0f}, {nullptr, &b, &c2, 0.0f}}), {"grouped_gemm", "problem 1", "A", "null"});
  expect_error(run({{&a, &b, &c, 0.0f}, {&a, &undefined, &c2, 0.0f}}), {"grouped_gemm", "problem 1", "B", "undefined"});
  expect_error(run({{&a, &b, &c, 0.0f}, {&a, &b, nullptr, 0.0f}}), {"grouped_gemm", "problem 1", "C", "null"});
  expect_error(run({{&a3, &b, &c, 0.0f}}), {"grouped_gemm", "problem 0", "A", "2-D"});
  expect_error(run({{&a, &b, &c, 0.0f}, {&a, &b_bad, &c2, 0.0f}}), {"grouped_gemm", "problem 1", "inner dimensions"});
  expect_error(run({{&a, &b, &c, 0.0f}, {&a, &b, &c_bad, 0.0f}}), {"grouped_gemm", "problem 1", "C", "[4,5]"});
  // The host computes in f32, as kernels::gemm.
  const Tensor a16 = Tensor::zeros({4, 3}, DType::BF16);
  expect_error(run({{&a, &b, &c, 0.0f}, {&a16, &b, &c2, 0.0f}}), {"grouped_gemm", "problem 1", "A", "f32"});
  // Outputs may not share memory with any operand: the problems run concurrently on CUDA.
  expect_error(run({{&a, &b, &c, 1.0f}, {&a, &b, &c, 1.0f}}), {"grouped_gemm", "overlaps", "C"});
  Tensor big = test::random_tensor({8, 5}, 8);
  Tensor top = big.narrow0(0, 4), middle = big.narrow0(2, 4);
  expect_error(run({{&a, &b, &top, 0.0f}, {&a, &b, &middle, 0.0f}}), {"grouped_gemm", "overlaps", "problem 0"});
  const Tensor square = test::random_tensor({5, 5}, 9);
  Tensor sq_out = square.narrow0(0, 4);
  const Tensor b55 = square;
  expect_error(run({{&a, &b, &c, 0.0f}, {&c2, &b55, &sq_out, 0.0f}}), {"grouped_gemm", "problem 1's C", "B"});
  // Problems without work are checked but never overlap.
  const Tensor a0 = Tensor::zeros({0, 3}, DType::F32);
  Tensor c0 = Tensor::zeros({0, 5}, DType::F32);
  EXPECT_NO_THROW(kernels::grouped_gemm(false, false, 1.0f, {{&a0, &b, &c0, 0.0f}, {&a0, &b, &c0, 0.0f}}));
  // Checked before anything runs.
  EXPECT_TRUE(same_bits(c, c_before));
}

}  // namespace
}  // namespace gppf
