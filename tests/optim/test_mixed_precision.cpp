// Dynamic loss scaling, the bf16/f16 working copy, and global-norm clipping on the host.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cast.hpp"
#include "kernels/optim.hpp"
#include "src/optim/optimizer.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

std::vector<nn::Parameter> make_params(std::uint64_t seed) {
  std::vector<nn::Parameter> ps(3);
  const std::vector<Shape> shapes = {{13, 3}, {7}, {101, 211}};
  for (std::size_t i = 0; i < ps.size(); ++i) {
    ps[i].name = str("p", i);
    ps[i].value = test::random_tensor(shapes[i], seed + i);
    ps[i].grad = test::random_tensor(shapes[i], seed + 10 + i);
    ps[i].decay = i != 1;
  }
  return ps;
}
std::vector<nn::Parameter*> ptrs(std::vector<nn::Parameter>& ps) {
  std::vector<nn::Parameter*> out;
  for (auto& p : ps) out.push_back(&p);
  return out;
}

TEST(LossScaler, GrowsAfterIntervalAndBacksOffOnOverflow) {
  optim::LossScalerConfig c;
  c.init_scale = 1024.0f;
  c.growth_interval = 3;
  optim::LossScaler s(c);
  EXPECT_FALSE(s.update(false));
  EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 1024.0f);
  EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 2048.0f);
  EXPECT_EQ(s.clean_steps(), 0);
  EXPECT_FALSE(s.update(false));
  EXPECT_TRUE(s.update(true));  // overflow: halve, restart the clean count
  EXPECT_EQ(s.scale(), 1024.0f);
  EXPECT_EQ(s.clean_steps(), 0);
  EXPECT_EQ(s.skipped_steps(), 1);
  for (int i = 0; i < 2; ++i) s.update(false);
  EXPECT_EQ(s.scale(), 1024.0f);  // only 2 clean steps since the overflow
  s.update(false);
  EXPECT_EQ(s.scale(), 2048.0f);
  c.min_scale = 512.0f;
  optim::LossScaler floor(c);
  for (int i = 0; i < 5; ++i) floor.update(true);
  EXPECT_EQ(floor.scale(), 512.0f);
  c.backoff_factor = 1.0f;
  EXPECT_THROW(optim::LossScaler{c}, Error);
}

TEST(LossScaler, OptimizerUnscalesAndSkipsOnInfOrNan) {
  for (const char* type : {"sgd", "adamw", "lamb"}) {
    auto scaled = make_params(1), plain = make_params(1);
    optim::OptimizerConfig c;
    c.type = type;
    c.max_grad_norm = 5.0f;
    optim::LossScalerConfig lc;
    lc.init_scale = 256.0f;
    lc.growth_interval = 2;
    optim::LossScaler scaler(lc);
    auto opt = optim::Optimizer::create(c, ptrs(scaled));
    auto ref = optim::Optimizer::create(c, ptrs(plain));
    opt->set_loss_scaler(&scaler);
    for (int s = 0; s < 6; ++s) {
      const bool poison = s == 2 || s == 4;
      const float scale = scaler.scale();
      for (std::size_t i = 0; i < scaled.size(); ++i) {
        Tensor g = test::random_tensor(scaled[i].value.shape(), 50 + 10 * s + i);
        plain[i].grad.copy_from(g);
        plain[i].touched = true;
        // The scaled run sees grad * scale (as backward of scale * loss would give), exact in f32.
        std::vector<float> v = g.to_float_vector();
        for (float& x : v) x *= scale;
        if (poison && i == 2) v[17] = s == 2 ? std::numeric_limits<float>::infinity() : std::nanf("");
        scaled[i].grad.copy_from(Tensor::from_vector(g.shape(), v));
        scaled[i].touched = true;
      }
      std::vector<std::vector<float>> before;
      for (auto& p : scaled) before.push_back(p.value.to_float_vector());
      const auto state_before = opt->state();
      const float norm = opt->step(0.1f);
      EXPECT_EQ(opt->last_step_skipped(), poison) << type << " step " << s;
      for (auto& p : scaled) EXPECT_FALSE(p.touched);
      if (poison) {
        EXPECT_FALSE(std::isfinite(norm));
        EXPECT_EQ(scaler.scale(), scale / 2) << type;
        for (std::size_t i = 0; i < scaled.size(); ++i)
          EXPECT_EQ(scaled[i].value.to_float_vector(), before[i]) << type << ": skipped step changed " << i;
        if (std::string(type) != "sgd") {
          EXPECT_EQ(opt->state()[2].second->data_as<std::int64_t>()[0], s == 2 ? 2 : 3);
        }
        for (auto& p : plain) p.clear_grad();  // the reference skips too
        continue;
      }
      const float ref_norm = ref->step(0.1f);
      EXPECT_NEAR(norm, ref_norm, 1e-5 * ref_norm) << type << " step " << s;
      for (std::size_t i = 0; i < scaled.size(); ++i)
        EXPECT_LT(test::max_rel_error(scaled[i].value, plain[i].value), 2e-6) << type << " step " << s << " " << i;
    }
    // Clean steps 0, 1 grow 256 -> 512; overflow at 2 -> 256; clean 3; overflow at 4 -> 128; clean 5.
    EXPECT_EQ(scaler.scale(), 128.0f) << type;
    EXPECT_EQ(scaler.skipped_steps(), 2);
  }
}

TEST(Optimizer, NonFiniteGradientWithoutScalerSkipsTheStep) {
  auto ps = make_params(2);
  auto opt = optim::Optimizer::create({}, ptrs(ps));
  const auto before = ps[0].value.to_float_vector();
  for (auto& p : ps) p.touched = true;
  ps[0].grad.data_as<float>()[3] = std::nanf("");
  EXPECT_TRUE(std::isnan(opt->step(0.1f)));
  EXPECT_TRUE(opt->last_step_skipped());
  EXPECT_EQ(ps[0].value.to_float_vector(), before);
  EXPECT_TRUE(optim::LossScaler::grads_finite(ptrs(ps)));  // nothing touched any more
  ps[0].touched = true;
  EXPECT_FALSE(optim::LossScaler::grads_finite(ptrs(ps)));
  ps[0].grad.data_as<float>()[3] = 1.0f;
  EXPECT_TRUE(optim::LossScaler::grads_finite(ptrs(ps)));
}

TEST(MixedPrecision, WorkingCopyFollowsTheMasterWeights) {
  auto ps = make_params(3);
  Tensor bf = Tensor::zeros(ps[2].value.shape(), DType::BF16);
  Tensor h = Tensor::zeros(ps[0].value.shape(), DType::F16);
  optim::OptimizerConfig c;
  c.type = "adamw";
  auto opt = optim::Optimizer::create(c, ptrs(ps));
  opt->set_working_copy(ps[2], &bf);
  opt->set_working_copy(ps[0], &h);
  for (auto& p : ps) p.touched = true;
  opt->step(0.01f);
  const Tensor want_bf = kernels::cast(ps[2].value, DType::BF16);
  const Tensor want_h = kernels::cast(ps[0].value, DType::F16);
  EXPECT_EQ(std::memcmp(bf.data(), want_bf.data(), bf.nbytes()), 0);
  EXPECT_EQ(std::memcmp(h.data(), want_h.data(), h.nbytes()), 0);
  // Untouched: the copy stays as it was.
  ps[0].touched = true;
  const Tensor old_bf = bf.clone();
  opt->step(0.01f);
  EXPECT_EQ(std::memcmp(bf.data(), old_bf.data(), bf.nbytes()), 0);

  Tensor wrong = Tensor::zeros(ps[2].value.shape(), DType::F32);
  EXPECT_THROW(opt->set_working_copy(ps[2], &wrong), Error);
  Tensor bad_shape = Tensor::zeros({5}, DType::BF16);
  EXPECT_THROW(optim::write_working_copy(ps[2], bad_shape), Error);
  nn::Parameter stranger;
  EXPECT_THROW(opt->set_working_copy(stranger, &bf), Error);
}

TEST(Clip, GlobalNormCountsTouchedParametersOnly) {
  auto ps = make_params(4);
  ps[0].touched = true;
  ps[2].touched = true;
  ps[1].touched = false;
  ps[1].grad.fill_(1e6f);  // must not count
  double want = 0.0;
  for (std::size_t i : {0u, 2u})
    for (double g : test::to_double(ps[i].grad)) want += g * g;
  want = std::sqrt(want);
  EXPECT_NEAR(optim::global_grad_norm(ptrs(ps)), want, 1e-12 * want);

  const auto g0 = test::to_double(ps[0].grad);
  const double before = optim::clip_grad_norm(ptrs(ps), 1.0f);
  EXPECT_NEAR(before, want, 1e-12 * want);
  EXPECT_NEAR(optim::global_grad_norm(ptrs(ps)), 1.0, 1e-5);
  const double f = 1.0 / (want + 1e-6);
  std::vector<double> scaled(g0.size());
  for (std::size_t j = 0; j < g0.size(); ++j) scaled[j] = g0[j] * f;
  EXPECT_LT(test::max_rel_error(ps[0].grad, scaled), 1e-6);
  // Below the threshold: untouched.
  const auto g2 = ps[2].grad.to_float_vector();
  optim::clip_grad_norm(ptrs(ps), 100.0f);
  EXPECT_EQ(ps[2].grad.to_float_vector(), g2);
  EXPECT_EQ(optim::clip_factor(3.0, 0.0f), 1.0f);
  EXPECT_EQ(optim::clip_factor(3.0, 4.0f), 1.0f);
}

TEST(Clip, SumOfSquaresIsBitwiseIndependentOfThreadCount) {
  const Tensor x = test::random_tensor({1000003}, 9);
  const Tensor y = test::random_tensor({1000003}, 10);
  double one[2], two[2];
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  kernels::sum_squares(x, &y, one);
  omp_set_num_threads(std::max(2, threads));
  kernels::sum_squares(x, &y, two);
  omp_set_num_threads(threads);
  EXPECT_EQ(std::memcmp(one, two, sizeof(one)), 0);
  double want = 0.0;
  for (double v : test::to_double(x)) want += v * v;
  EXPECT_NEAR(one[0], want, 1e-10 * want);
  // A list gives each tensor the same bits as summing it alone.
  const Tensor small = test::random_tensor({37}, 11);
  double list[3][2], alone[2];
  const std::vector<kernels::SumSquares> jobs = {{&small, nullptr, list[0]}, {&x, &y, list[1]}, {&y, nullptr, list[2]}};
  kernels::sum_squares(jobs);
  EXPECT_EQ(std::memcmp(list[1], one, sizeof(one)), 0);
  kernels::sum_squares(small, nullptr, alone);
  EXPECT_EQ(std::memcmp(list[0], alone, sizeof(alone)), 0);
  EXPECT_EQ(list[2][0], one[1]);
  EXPECT_THROW(kernels::sum_squares(x, nullptr, nullptr), Error);
  const Tensor short_y = test::random_tensor({5}, 1);
  EXPECT_THROW(kernels::sum_squares(x, &short_y, one), Error);
}

}  // namespace
}  // namespace gppf
