#include <gtest/gtest.h>

#include <limits>

#include "kernels/concat.hpp"
#include "kernels/ref/concat.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::GradMode;
using Vec = std::vector<double>;

Shape with_last(Shape s, std::int64_t c) {
  s.back() = c;
  return s;
}

TEST(ConcatRef, SplitIsTheGradientOfConcat) {
  const std::vector<std::int64_t> channels = {2, 3, 1};
  const std::int64_t rows = 4;
  const Vec r = test::random_vector(rows * 6, 1);
  std::vector<Vec> xs;
  for (std::size_t i = 0; i < channels.size(); ++i)
    xs.push_back(test::random_vector(static_cast<std::size_t>(rows * channels[i]), 2 + i));
  const std::vector<Vec> grads = kernels::ref::split_channels(r, channels, rows);
  for (std::size_t part = 0; part < xs.size(); ++part) {
    auto loss = [&](const Vec& v) {
      std::vector<Vec> parts = xs;
      parts[part] = v;
      const Vec y = kernels::ref::concat_channels(parts, channels, rows);
      double s = 0.0;
      for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * r[i];
      return s;
    };
    const auto res = test::check_gradient(loss, xs[part], grads[part]);
    EXPECT_TRUE(res.ok) << "part " << part << ": " << res.message();
  }
}

TEST(Concat, HostMatchesReferenceAndSplitInvertsIt) {
  std::uint64_t seed = 10;
  for (const Shape& base : std::vector<Shape>{{5, 1}, {2, 7, 9, 1}, {3, 33, 17, 1}})
    for (const std::vector<std::int64_t>& channels :
         std::vector<std::vector<std::int64_t>>{{3}, {1, 4}, {5, 0, 2, 9}, {64, 31}}) {
      std::int64_t total = 0;
      for (const auto c : channels) total += c;
      const std::int64_t rows = shape_numel(base);
      std::vector<Tensor> xs;
      std::vector<Vec> vs;
      for (const auto c : channels) {
        xs.push_back(test::random_tensor(with_last(base, c), ++seed));
        vs.push_back(test::to_double(xs.back()));
      }
      const std::string what = str(shape_str(base), " parts ", channels.size(), " total ", total);
      Tensor y = Tensor::empty(with_last(base, total), DType::F32);
      kernels::concat_channels(xs, y);
      EXPECT_EQ(test::max_rel_error(y, kernels::ref::concat_channels(vs, channels, rows)), 0.0) << what;

      // split: overwrite gives the parts back exactly; accumulate adds them to the old values
      const Tensor dy = test::random_tensor(y.shape(), ++seed);
      const std::vector<Vec> expect = kernels::ref::split_channels(test::to_double(dy), channels, rows);
      std::vector<Tensor> grads;
      std::vector<Vec> old;
      for (const auto c : channels) {
        grads.push_back(test::random_tensor(with_last(base, c), ++seed));
        old.push_back(test::to_double(grads.back()));
      }
      kernels::split_channels(dy, grads, GradMode::Accumulate);
      for (std::size_t i = 0; i < grads.size(); ++i) {
        Vec sum = old[i];
        for (std::size_t k = 0; k < sum.size(); ++k) sum[k] += expect[i][k];
        EXPECT_LT(test::max_rel_error(grads[i], sum), 1e-6) << what << " part " << i;
      }
      for (auto& g : grads) g.fill_(std::numeric_limits<float>::quiet_NaN());
      kernels::split_channels(y, grads, GradMode::Overwrite);
      for (std::size_t i = 0; i < grads.size(); ++i)
        EXPECT_EQ(test::max_rel_error(grads[i], xs[i]), 0.0) << what << " part " << i;
    }
}

TEST(Concat, ShapeErrorsNameTheOp) {
  Tensor y = Tensor::zeros({2, 3, 5}, DType::F32);
  std::vector<Tensor> wrong_total = {Tensor::zeros({2, 3, 2}, DType::F32), Tensor::zeros({2, 3, 2}, DType::F32)};
  std::vector<Tensor> wrong_rows = {Tensor::zeros({2, 4, 2}, DType::F32), Tensor::zeros({2, 3, 3}, DType::F32)};
  std::vector<Tensor> wrong_dtype = {Tensor::zeros({2, 3, 2}, DType::F32), Tensor::zeros({2, 3, 3}, DType::I32)};
  for (auto* xs : {&wrong_total, &wrong_rows, &wrong_dtype}) {
    try {
      kernels::concat_channels(*xs, y);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("concat_channels"), std::string::npos) << e.what();
    }
    EXPECT_THROW(kernels::split_channels(y, *xs, GradMode::Overwrite), Error);
  }
  std::vector<Tensor> none;
  EXPECT_THROW(kernels::concat_channels(none, y), Error);
}

}  // namespace
}  // namespace gppf
