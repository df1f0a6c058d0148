// Classification head (global + 2x2 grid pooling), segmentation head (FPN neck with context levels,
// stage-0 skip) and the simple feature pyramid of a plain backbone's map: shapes, forward against a
// plain reference, and backward (feature gradients and weights) against central differences of the
// float forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <tuple>

#include "core/error.hpp"
#include "src/nn/heads.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf::nn {
namespace {

double weighted_sum(const Tensor& y, const Tensor& r) {
  double s = 0;
  for (std::int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.data_as<float>()[i]) * r.data_as<float>()[i];
  return s;
}

Parameter* find(std::vector<Parameter*>& params, const std::string& name) {
  for (Parameter* p : params)
    if (p->name == name) return p;
  return nullptr;
}

// An odd last stage (5x5: the grid's windows overlap on the middle row and column) and an even one;
// grid false: the mean alone.
void check_classification_gradients(int size, bool grid = true) {
  std::mt19937_64 rng(3);
  ClassificationHead head("cls", 4, 3, rng, grid);
  RunState rs;
  std::vector<Tensor> features = {test::random_tensor({2, 2 * size, 2 * size, 2}, 31),
                                  test::random_tensor({2, size, size, 4}, 32)};
  Tensor y = head.forward(rs, features);
  ASSERT_EQ(y.shape(), (Shape{2, 3}));
  Tensor r = test::random_tensor(y.shape(), 33);
  const std::vector<Tensor> dfeat = head.backward(rs, r);
  ASSERT_EQ(dfeat.size(), 2u);
  EXPECT_FALSE(dfeat[0].defined());
  std::vector<Parameter*> params;
  head.collect_parameters(params);
  Parameter* fc = find(params, "cls.fc.weight");
  ASSERT_NE(fc, nullptr);
  ASSERT_EQ(fc->value.numel(), 3 * (grid ? 5 : 1) * 4);  // 5 pooled values per channel, or the mean
  const Tensor fc_grad = fc->grad.clone();
  auto loss_with = [&](Tensor target) {
    return [&, target](const std::vector<double>& v) mutable {
      for (std::size_t i = 0; i < v.size(); ++i) target.data_as<float>()[i] = static_cast<float>(v[i]);
      Tensor out = head.forward(rs, features);
      head.backward(rs, r);
      return weighted_sum(out, r);
    };
  };
  test::GradCheckOptions o;
  o.step = 1e-3;
  o.rtol = 1e-2;
  o.atol = 1e-3;
  for (auto [target, analytic, what] :
       {std::tuple{features[1], dfeat[1], "d last stage"}, std::tuple{fc->value, fc_grad, "d fc weight"}}) {
    const auto orig = test::to_double(target);
    const auto res = test::check_gradient(loss_with(target), orig, test::to_double(analytic), o);
    EXPECT_TRUE(res.ok) << what << " " << res.message();
    loss_with(target)(orig);
  }
}

TEST(ClassificationHead, GradientsOddGrid) { check_classification_gradients(5); }
TEST(ClassificationHead, GradientsEvenGrid) { check_classification_gradients(4); }
TEST(ClassificationHead, GradientsMeanPoolOnly) { check_classification_gradients(1, false); }

TEST(ClassificationHead, TooSmallForTheGridNamesTheShape) {
  std::mt19937_64 rng(4);
  ClassificationHead head("cls", 4, 3, rng);
  RunState rs;
  std::vector<Tensor> features = {test::random_tensor({2, 1, 1, 4}, 34)};
  try {
    head.forward(rs, features);
    FAIL() << "a 1x1 last stage must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1x1"), std::string::npos) << e.what();
  }
}

// Three stages at strides 1, 2, 4 of a 16x16 input (gppf-mini's layout); out_size 16 reads the logits at
// stage 0's resolution, 32 adds the final bilinear upsampling.
void check_segmentation_gradients(int out_size) {
  std::mt19937_64 rng(5);
  NeckSpec neck;
  neck.first_stage = 1;
  neck.channels = 4;
  neck.context_levels = 3;
  SegmentationHead head("seg", {3, 4, 5}, neck, 3, 2, rng);
  RunState rs;
  rs.task = 1;
  std::vector<Tensor> features = {test::random_tensor({2, 16, 16, 3}, 21), test::random_tensor({2, 8, 8, 4}, 22),
                                  test::random_tensor({2, 4, 4, 5}, 23)};
  Tensor y = head.forward(rs, features, out_size, out_size);
  ASSERT_EQ(y.shape(), (Shape{2, out_size, out_size, 3}));
  Tensor r = test::random_tensor(y.shape(), 24);
  const std::vector<Tensor> dfeat = head.backward(rs, r);
  ASSERT_EQ(dfeat.size(), 3u);

  std::vector<Parameter*> params;
  head.collect_parameters(params);
  Parameter* context = find(params, "seg.neck.context1.weight");
  Parameter* skip = find(params, "seg.skip.weight");
  ASSERT_NE(context, nullptr);
  ASSERT_NE(skip, nullptr);
  const Tensor context_grad = context->grad.clone();
  const Tensor skip_grad = skip->grad.clone();

  auto loss_with = [&](Tensor target) {
    return [&, target](const std::vector<double>& v) mutable {
      for (std::size_t i = 0; i < v.size(); ++i) target.data_as<float>()[i] = static_cast<float>(v[i]);
      Tensor out = head.forward(rs, features, out_size, out_size);
      head.backward(rs, r);  // keep the saved state paired
      return weighted_sum(out, r);
    };
  };
  test::GradCheckOptions o;
  o.step = 1e-3;
  o.rtol = 3e-2;
  o.atol = 2e-2;
  o.max_checks = 16;
  auto check = [&](const Tensor& target, const Tensor& analytic, const char* what) {
    ASSERT_TRUE(analytic.defined()) << what;
    const auto orig = test::to_double(target);
    const auto res = test::check_gradient(loss_with(target), orig, test::to_double(analytic), o);
    EXPECT_TRUE(res.ok) << what << " " << res.message();
    loss_with(target)(orig);
  };
  check(features[0], dfeat[0], "d stage0 (skip)");
  check(features[1], dfeat[1], "d stage1 (lateral)");
  check(features[2], dfeat[2], "d stage2 (lateral + context)");
  check(context->value, context_grad, "d context1 weight");
  check(skip->value, skip_grad, "d skip weight");
}

TEST(SegmentationHead, GradientsAtStage0Resolution) { check_segmentation_gradients(16); }
TEST(SegmentationHead, GradientsWithFinalUpsampling) { check_segmentation_gradients(32); }

TEST(SegmentationHead, MacsCountContextAndSkip) {
  std::mt19937_64 rng(6);
  NeckSpec neck;
  neck.first_stage = 1;
  neck.channels = 4;
  neck.context_levels = 3;
  SegmentationHead head("seg", {3, 4, 5}, neck, 3, 1, rng);
  const std::vector<Shape> f = {{1, 16, 16, 3}, {1, 8, 8, 4}, {1, 4, 4, 5}};
  // laterals 8*8*4*4 + 4*4*5*4; context 2*2*9*5*4 + 1*1*9*4*4 + 1*1*9*4*4 (4x4 -> 2x2 -> 1x1 -> 1x1);
  // smooth 8*8*9*4*4; classifier 8*8*4*3; skip 16*16*3*3
  const std::int64_t expected = 8 * 8 * 4 * 4 + 4 * 4 * 5 * 4 + 2 * 2 * 9 * 5 * 4 + 2 * 9 * 4 * 4 + 8 * 8 * 9 * 4 * 4 +
                                8 * 8 * 4 * 3 + 16 * 16 * 3 * 3;
  EXPECT_EQ(head.macs(f), expected);
}

// ---- the simple feature pyramid ------------------------------------------------------------

// Levels x4, x2, x1, x1/2 of a [2, 3, 3, 8] map.
const std::vector<int> kScales = {2, 1, 0, -1};

TEST(SimplePyramid, LevelsAreTransposedConvolutionsTheMapAndMaxPools) {
  std::mt19937_64 rng(7);
  SimplePyramid pyr("p", 8, kScales, {true, true, true, true}, rng);
  EXPECT_EQ(pyr.channels(), (std::vector<int>{2, 4, 8, 8}));
  RunState rs;
  rs.training = false;
  const Tensor map = test::random_tensor({2, 3, 3, 8}, 8);
  const std::vector<Tensor> levels = pyr.forward(rs, map);
  ASSERT_EQ(levels.size(), 4u);
  const std::vector<Shape> want = {{2, 12, 12, 2}, {2, 6, 6, 4}, {2, 3, 3, 8}, {2, 1, 1, 8}};
  EXPECT_EQ(pyr.output_shapes(map.shape()), want);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(levels[i].shape(), want[i]) << i;
  std::vector<Parameter*> params;
  pyr.collect_parameters(params);
  const Parameter* w = find(params, "p.x2.up0.weight");
  const Parameter* b = find(params, "p.x2.up0.bias");
  ASSERT_TRUE(w && b);
  // x2: y[n, 2i + a, 2j + c, o] = b[(2a + c) 4 + o] + sum_d W[(2a + c) 4 + o, d] x[n, i, j, d], in double.
  const auto x = map.to_float_vector(), wv = w->value.to_float_vector(), bv = b->value.to_float_vector();
  const auto y2 = levels[1].to_float_vector();
  for (int n = 0; n < 2; ++n)
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        for (int a = 0; a < 2; ++a)
          for (int c = 0; c < 2; ++c)
            for (int o = 0; o < 4; ++o) {
              const int row = (2 * a + c) * 4 + o;
              double ref = bv[row];
              for (int d = 0; d < 8; ++d)
                ref += static_cast<double>(wv[row * 8 + d]) * x[((n * 3 + i) * 3 + j) * 8 + d];
              const float got = y2[((n * 6 + 2 * i + a) * 6 + 2 * j + c) * 4 + o];
              EXPECT_NEAR(got, ref, 1e-5) << n << " " << i << " " << j << " " << a << " " << c << " " << o;
            }
  EXPECT_EQ(levels[2].to_float_vector(), x);
  // x1/2 of a 3x3 map: the max over its top-left 2x2 window.
  const auto yh = levels[3].to_float_vector();
  for (int n = 0; n < 2; ++n)
    for (int d = 0; d < 8; ++d) {
      float m = -1e30f;
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) m = std::max(m, x[((n * 3 + i) * 3 + j) * 8 + d]);
      EXPECT_EQ(yh[n * 8 + d], m);
    }
}

TEST(SimplePyramid, Gradients) {
  std::mt19937_64 rng(9);
  SimplePyramid pyr("p", 8, kScales, {true, true, true, true}, rng);
  RunState rs;
  Tensor map = test::random_tensor({2, 3, 3, 8}, 10).clone();
  std::vector<Tensor> r;
  for (const Shape& s : pyr.output_shapes(map.shape())) r.push_back(test::random_tensor(s, 11 + r.size()));
  std::vector<Parameter*> params;
  pyr.collect_parameters(params);
  for (Parameter* p : params) p->clear_grad();
  Tensor dmap;
  auto loss = [&](Tensor target) {
    return [&, target](const std::vector<double>& v) mutable {
      for (std::size_t i = 0; i < v.size(); ++i) target.data_as<float>()[i] = static_cast<float>(v[i]);
      const std::vector<Tensor> levels = pyr.forward(rs, map);
      double s = 0;
      for (std::size_t l = 0; l < levels.size(); ++l) s += weighted_sum(levels[l], r[l]);
      dmap = pyr.backward(rs, r);
      return s;
    };
  };
  const auto orig_map = test::to_double(map);
  loss(map)(orig_map);
  const Tensor dmap0 = dmap.clone();
  std::vector<Tensor> grads;
  for (Parameter* p : params) grads.push_back(p->grad.clone());
  test::GradCheckOptions o;
  o.step = 1e-3;
  o.rtol = 3e-2;
  o.atol = 3e-3;
  o.max_checks = 30;
  auto check = [&](Tensor target, const Tensor& analytic, const std::string& what) {
    const auto orig = test::to_double(target);
    const auto res = test::check_gradient(loss(target), orig, test::to_double(analytic), o);
    EXPECT_TRUE(res.ok) << what << ": " << res.message();
    loss(target)(orig);
  };
  check(map, dmap0, "map");
  for (std::size_t i = 0; i < params.size(); ++i) check(params[i]->value, grads[i], params[i]->name);
  EXPECT_EQ(params.size(), 6u);  // x4: two transposed convolutions, x2: one, each weight and bias
}

TEST(SimplePyramid, LevelsNotReadAreNotBuilt) {
  std::mt19937_64 rng(12);
  SimplePyramid pyr("p", 8, {1, 0, -1}, {false, true, true}, rng);
  std::vector<Parameter*> params;
  pyr.collect_parameters(params);
  EXPECT_TRUE(params.empty());
  RunState rs;
  const Tensor map = test::random_tensor({1, 4, 4, 8}, 13);
  const std::vector<Tensor> levels = pyr.forward(rs, map);
  EXPECT_FALSE(levels[0].defined());
  EXPECT_EQ(levels[2].shape(), (Shape{1, 2, 2, 8}));
  EXPECT_EQ(pyr.macs(map.shape()), 0);
  const Tensor d = pyr.backward(rs, {Tensor(), test::random_tensor({1, 4, 4, 8}, 14), Tensor()});
  EXPECT_EQ(d.to_float_vector(), test::random_tensor({1, 4, 4, 8}, 14).to_float_vector());
}

TEST(SimplePyramid, BadScalesNameThePyramid) {
  std::mt19937_64 rng(15);
  EXPECT_THROW(
      {
        try {
          SimplePyramid("head.seg.pyramid", 8, {0, 1}, {true, true}, rng);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("head.seg.pyramid"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  EXPECT_THROW(SimplePyramid("p", 6, {2, 0}, {true, true}, rng), Error);  // 6 does not halve twice
}

// A segmentation head on a ViT's one map: its pyramid (x2, x1, x1/2) feeds the neck from level 1 on
// and the skip from level 0; the map's gradient sums all three.
TEST(SegmentationHead, GradientsThroughTheSimplePyramid) {
  std::mt19937_64 rng(16);
  NeckSpec neck;
  neck.first_stage = 1;
  neck.channels = 4;
  neck.context_levels = 1;
  neck.pyramid = {1, 0, -1};
  SegmentationHead head("seg", {8}, neck, 3, 1, rng);
  RunState rs;
  std::vector<Tensor> features = {test::random_tensor({2, 4, 4, 8}, 17).clone()};
  Tensor y = head.forward(rs, features, 16, 16);
  ASSERT_EQ(y.shape(), (Shape{2, 16, 16, 3}));
  const Tensor r = test::random_tensor(y.shape(), 18);
  const std::vector<Tensor> dfeat = head.backward(rs, r);
  ASSERT_EQ(dfeat.size(), 1u);
  std::vector<Parameter*> params;
  head.collect_parameters(params);
  Parameter* up = find(params, "seg.pyramid.x2.up0.weight");
  Parameter* skip = find(params, "seg.skip.weight");
  ASSERT_TRUE(up && skip);
  EXPECT_EQ(skip->value.shape(), (Shape{3, 1, 1, 4}));  // reads the x2 level's 4 channels
  const Tensor up_grad = up->grad.clone(), dmap = dfeat[0].clone();
  auto loss_with = [&](Tensor target) {
    return [&, target](const std::vector<double>& v) mutable {
      for (std::size_t i = 0; i < v.size(); ++i) target.data_as<float>()[i] = static_cast<float>(v[i]);
      Tensor out = head.forward(rs, features, 16, 16);
      head.backward(rs, r);
      return weighted_sum(out, r);
    };
  };
  test::GradCheckOptions o;
  o.step = 1e-3;
  o.rtol = 3e-2;
  o.atol = 2e-2;
  o.max_checks = 16;
  for (auto [target, analytic, what] :
       {std::tuple{features[0], dmap, "d map"}, std::tuple{up->value, up_grad, "d up"}}) {
    const auto orig = test::to_double(target);
    const auto res = test::check_gradient(loss_with(target), orig, test::to_double(analytic), o);
    EXPECT_TRUE(res.ok) << what << " " << res.message();
    loss_with(target)(orig);
  }
}

}  // namespace
}  // namespace gppf::nn
