#include <gtest/gtest.h>

#include <cmath>

#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf::test {
namespace {

double cubic(const std::vector<double>& x) {
  double s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) s += (static_cast<double>(i) + 1) * x[i] * x[i] * x[i];
  return s;
}

TEST(GradCheck, AcceptsACorrectGradient) {
  const auto x = random_vector(17, 1);
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) g[i] = 3 * (static_cast<double>(i) + 1) * x[i] * x[i];
  const auto r = check_gradient(cubic, x, g);
  EXPECT_TRUE(r.ok) << r.message();
  EXPECT_EQ(r.checked, 17u);
}

TEST(GradCheck, RejectsAWrongGradient) {
  const auto x = random_vector(17, 2);
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) g[i] = 3 * (static_cast<double>(i) + 1) * x[i] * x[i];
  g[9] *= 1.01;
  const auto r = check_gradient(cubic, x, g);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.worst_index, 9u);
}

TEST(GradCheck, SkipsKinks) {
  auto relu_sum = [](const std::vector<double>& x) {
    double s = 0;
    for (double v : x) s += v > 0 ? v : 0;
    return s;
  };
  std::vector<double> x = {0.5, -0.5, 1e-7, 2.0};
  std::vector<double> g = {1, 0, 123, 1};  // the value at the kink is irrelevant
  GradCheckOptions o;
  o.kink = 1e-4;
  const auto r = check_gradient(relu_sum, x, g, o);
  EXPECT_TRUE(r.ok) << r.message();
  EXPECT_EQ(r.checked, 3u);
}

TEST(ErrorMeasures, MaxRelError) {
  EXPECT_DOUBLE_EQ(max_rel_error(std::vector<double>{1, 2}, std::vector<double>{1, 4}), 0.5);
  EXPECT_TRUE(std::isinf(max_rel_error(std::vector<double>{NAN}, std::vector<double>{1})));
  EXPECT_TRUE(std::isinf(max_rel_error(std::vector<double>{1}, std::vector<double>{1, 2})));
}

}  // namespace
}  // namespace gppf::test
