// Classification head (global + 2x2 grid pooling) and segmentation head (FPN neck with context levels,
// stage-0 skip): shapes, and backward (feature gradients and weights) against central differences of
// the float forward.
#include <gtest/gtest.h>

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

// An odd last stage (5x5: the grid's windows overlap on the middle row and column) and an even one.
void check_classification_gradients(int size) {
  std::mt19937_64 rng(3);
  ClassificationHead head("cls", 4, 3, rng);
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
  ASSERT_EQ(fc->value.numel(), 3 * 5 * 4);  // 5 pooled values per channel
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

}  // namespace
}  // namespace gppf::nn
