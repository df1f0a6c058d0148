// Filter gradients of stride-2 convolutions over a sweep of small channel counts and odd and even
// sizes up to 64 px: oneDNN 2.6's strided 1x1 filter gradient (nhwc, fewer than 16 input channels)
// wrote past its scratchpad from 56 px on, which corrupted the heap in training (exit 134/139).
#include <gtest/gtest.h>

#include <cmath>

#include "tests/conv/conv_cases.hpp"

namespace gppf::test {
namespace {

struct SweepCase {
  std::int64_t n, h, w, c, k, r;  // x [n,h,w,c], w [k,r,r,c], stride 2, pad r/2
};

std::vector<SweepCase> sweep() {
  std::vector<SweepCase> out;
  for (std::int64_t r : {1, 3})
    for (std::int64_t c : {1, 3, 8, 15, 16, 17})
      for (std::int64_t h : {7, 27, 55, 56, 57, 64}) out.push_back({2, h, h == 64 ? 63 : h, c, c < 16 ? 16 : 5, r});
  return out;
}

std::string sweep_name(const testing::TestParamInfo<SweepCase>& info) {
  const SweepCase& s = info.param;
  return str("k", s.r, "_c", s.c, "_k", s.k, "_", s.h, "x", s.w);
}

class ConvStride2Sweep : public testing::TestWithParam<SweepCase> {};

TEST_P(ConvStride2Sweep, FilterGradMatchesReference) {
  const SweepCase& s = GetParam();
  kernels::Conv2dParams p;
  p.stride_h = p.stride_w = 2;
  p.pad_h = p.pad_w = static_cast<int>(s.r / 2);
  const Shape xs{s.n, s.h, s.w, s.c}, ws{s.k, s.r, s.r, s.c};
  const kernels::Conv2dGeometry g = kernels::conv2d_geometry("test", p, xs, ws);
  auto x = random_vector(static_cast<std::size_t>(shape_numel(xs)), 1);
  auto dy = random_vector(static_cast<std::size_t>(shape_numel(g.y_shape())), 2);
  for (auto* v : {&x, &dy})
    for (auto& e : *v) e = static_cast<float>(e);
  std::vector<double> dw_ref(static_cast<std::size_t>(shape_numel(ws))), db_ref(static_cast<std::size_t>(s.k));
  kernels::ref::conv2d_bwd_filter(p, g, x.data(), dy.data(), dw_ref.data(), db_ref.data());
  const Tensor xt = Tensor::from_vector(xs, to_float(x)), dyt = Tensor::from_vector(g.y_shape(), to_float(dy));
  const auto dw0 = random_vector(dw_ref.size(), 3);
  Tensor dw = Tensor::from_vector(ws, to_float(dw0)), db = Tensor::zeros({s.k}, DType::F32);
  // Accumulate too: it takes the oneDNN path's reorder-and-add.
  kernels::conv2d_bwd_filter(p, xt, dyt, dw, &db, kernels::GradMode::Accumulate);
  for (std::size_t i = 0; i < dw_ref.size(); ++i) dw_ref[i] += dw0[i];
  EXPECT_LT(max_rel_error(dw, dw_ref), 1e-4);
  EXPECT_LT(max_rel_error(db, db_ref), 1e-4);
  dw.fill_(std::nanf(""));
  kernels::conv2d_bwd_filter(p, xt, dyt, dw, nullptr, kernels::GradMode::Overwrite);
  for (std::size_t i = 0; i < dw_ref.size(); ++i) dw_ref[i] -= dw0[i];
  EXPECT_LT(max_rel_error(dw, dw_ref), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConvStride2Sweep, testing::ValuesIn(sweep()), sweep_name);

}  // namespace
}  // namespace gppf::test
