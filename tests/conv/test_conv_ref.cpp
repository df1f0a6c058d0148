// The reference convolution against its definition's derivatives: central differences of
// L = sum(y * dy) with respect to x, w and bias.
#include <gtest/gtest.h>

#include "tests/common/gradcheck.hpp"
#include "tests/conv/conv_cases.hpp"

namespace gppf::test {
namespace {

class ConvRefGrad : public testing::TestWithParam<ConvCase> {};

TEST_P(ConvRefGrad, BackwardMatchesFiniteDifferences) {
  const ConvCase& c = GetParam();
  const auto g = kernels::conv2d_geometry("test", c.p, c.x, c.w());
  const auto x = random_vector(static_cast<std::size_t>(shape_numel(c.x)), 11);
  const auto w = random_vector(static_cast<std::size_t>(shape_numel(c.w())), 12);
  const auto b = random_vector(static_cast<std::size_t>(g.k), 13);
  const auto dy = random_vector(static_cast<std::size_t>(shape_numel(g.y_shape())), 14);
  std::vector<double> y(dy.size());
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& ww, const std::vector<double>& bb) {
    kernels::ref::conv2d_fwd(c.p, g, xx.data(), ww.data(), c.bias ? bb.data() : nullptr, y.data());
    double l = 0;
    for (std::size_t i = 0; i < y.size(); ++i) l += y[i] * dy[i];
    return l;
  };
  std::vector<double> dx(x.size()), dw(w.size()), db(b.size());
  kernels::ref::conv2d_bwd_data(c.p, g, dy.data(), w.data(), dx.data());
  kernels::ref::conv2d_bwd_filter(c.p, g, x.data(), dy.data(), dw.data(), c.bias ? db.data() : nullptr);

  GradCheckOptions opt;
  opt.max_checks = 60;
  auto rx = check_gradient([&](const std::vector<double>& v) { return loss(v, w, b); }, x, dx, opt);
  EXPECT_TRUE(rx.ok) << "dx: " << rx.message();
  auto rw = check_gradient([&](const std::vector<double>& v) { return loss(x, v, b); }, w, dw, opt);
  EXPECT_TRUE(rw.ok) << "dw: " << rw.message();
  if (c.bias) {
    auto rb = check_gradient([&](const std::vector<double>& v) { return loss(x, w, v); }, b, db, opt);
    EXPECT_TRUE(rb.ok) << "dbias: " << rb.message();
  }
}

// The chunked case is only there for the GEMM path; its gradcheck would be slow and adds nothing.
std::vector<ConvCase> small_cases() {
  auto cases = conv_cases();
  std::erase_if(cases, [](const ConvCase& c) { return shape_numel(c.x) > 2000; });
  return cases;
}
INSTANTIATE_TEST_SUITE_P(Cases, ConvRefGrad, testing::ValuesIn(small_cases()), conv_case_name);

TEST(ConvRef, ForwardOfAKnownCase) {
  // 1 image 3x3x1, 2x2 filter of ones, stride 1, no pad: each output is a 2x2 window sum, plus bias.
  const kernels::Conv2dParams p;
  const auto g = kernels::conv2d_geometry("test", p, {1, 3, 3, 1}, {1, 2, 2, 1});
  const std::vector<double> x{1, 2, 3, 4, 5, 6, 7, 8, 9}, w{1, 1, 1, 1}, b{0.5};
  std::vector<double> y(4);
  kernels::ref::conv2d_fwd(p, g, x.data(), w.data(), b.data(), y.data());
  EXPECT_EQ(y, (std::vector<double>{12.5, 16.5, 24.5, 28.5}));
}

TEST(ConvRef, GroupsSeeOnlyTheirOwnChannels) {
  // Two groups of one channel: output k reads only input channel k.
  kernels::Conv2dParams p;
  p.groups = 2;
  const auto g = kernels::conv2d_geometry("test", p, {1, 1, 1, 2}, {2, 1, 1, 1});
  const std::vector<double> x{3, 5}, w{2, 7};
  std::vector<double> y(2);
  kernels::ref::conv2d_fwd(p, g, x.data(), w.data(), nullptr, y.data());
  EXPECT_EQ(y, (std::vector<double>{6, 35}));
}

}  // namespace
}  // namespace gppf::test
