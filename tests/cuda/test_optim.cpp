// CUDA optimizers against the host ones: same parameters, gradients and steps on both devices.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/cuda_runtime.hpp"
#include "kernels/cast.hpp"
#include "kernels/optim.hpp"
#include "src/optim/optimizer.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

struct Twin {
  std::vector<nn::Parameter> host, dev;
  std::vector<nn::Parameter*> host_ptrs() {
    std::vector<nn::Parameter*> out;
    for (auto& p : host) out.push_back(&p);
    return out;
  }
  std::vector<nn::Parameter*> dev_ptrs() {
    std::vector<nn::Parameter*> out;
    for (auto& p : dev) out.push_back(&p);
    return out;
  }
};

Twin make_twin(int extra = 0) {
  std::vector<Shape> shapes = {{64, 3, 3, 17}, {17}, {1000, 257}, {3}};
  // Many more tensors: the multi-tensor launches then span several packs, and some tensors several
  // reduction chunks.
  for (int i = 0; i < extra; ++i) shapes.push_back({1 + (i * 37) % 20000});
  Twin t;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    nn::Parameter h;
    h.name = str("p", i);
    h.value = test::random_tensor(shapes[i], 40 + i);
    h.grad = Tensor::zeros(shapes[i], DType::F32);
    h.decay = i % 2 == 0;
    nn::Parameter d;
    d.name = h.name;
    d.value = h.value.to(Device::cuda(0));
    d.grad = Tensor::zeros(shapes[i], DType::F32, Device::cuda(0));
    d.decay = h.decay;
    t.host.push_back(std::move(h));
    t.dev.push_back(std::move(d));
  }
  return t;
}

TEST(OptimCuda, EveryOptimizerMatchesTheHost) {
  GPPF_REQUIRE_GPU();
  for (const char* type : {"sgd", "adamw", "lars", "lamb"}) {
    for (bool nesterov : {false, true}) {
      if (nesterov && (std::string(type) == "adamw" || std::string(type) == "lamb")) continue;
      Twin t = make_twin();
      optim::OptimizerConfig c;
      c.type = type;
      c.nesterov = nesterov;
      c.weight_decay = 0.05f;
      c.trust_coefficient = 0.02f;
      c.max_grad_norm = 50.0f;
      auto oh = optim::Optimizer::create(c, t.host_ptrs());
      auto od = optim::Optimizer::create(c, t.dev_ptrs());
      for (int s = 0; s < 5; ++s) {
        for (std::size_t i = 0; i < t.host.size(); ++i) {
          const bool use = !(i == 2 && s == 1);
          const Tensor g = test::random_tensor(t.host[i].value.shape(), 90 + 10 * s + i);
          t.host[i].grad.copy_from(g);
          t.dev[i].grad.copy_from(g);
          t.host[i].touched = t.dev[i].touched = use;
        }
        const float nh = oh->step(0.1f);
        const float nd = od->step(0.1f);
        EXPECT_NEAR(nd, nh, 1e-5 * nh) << type << " step " << s;
        for (std::size_t i = 0; i < t.host.size(); ++i)
          EXPECT_LT(test::max_rel_error(t.dev[i].value.to(Device::host()), t.host[i].value), 1e-3)
              << type << (nesterov ? " nesterov" : "") << " step " << s << " " << t.host[i].name;
      }
      const auto sh = oh->state(), sd = od->state();
      ASSERT_EQ(sh.size(), sd.size());
      for (std::size_t k = 0; k < sh.size(); ++k) {
        if (sh[k].second->dtype() != DType::F32) continue;
        EXPECT_LT(test::max_rel_error(sd[k].second->to(Device::host()), *sh[k].second), 1e-3) << sh[k].first;
      }
    }
  }
}

// 300 tensors: every optimizer's update and norm run in several packs (kernels/functors/multi_tensor.hpp).
TEST(OptimCuda, ManyTensorsSpanSeveralPacksAndMatchTheHost) {
  GPPF_REQUIRE_GPU();
  for (const char* type : {"sgd", "adamw", "lars", "lamb"}) {
    Twin t = make_twin(300);
    optim::OptimizerConfig c;
    c.type = type;
    c.max_grad_norm = 50.0f;
    auto oh = optim::Optimizer::create(c, t.host_ptrs());
    auto od = optim::Optimizer::create(c, t.dev_ptrs());
    for (int s = 0; s < 2; ++s) {
      for (std::size_t i = 0; i < t.host.size(); ++i) {
        const Tensor g = test::random_tensor(t.host[i].value.shape(), 7 + 13 * s + i);
        t.host[i].grad.copy_from(g);
        t.dev[i].grad.copy_from(g);
        t.host[i].touched = t.dev[i].touched = i % 5 != 3;
      }
      const float nh = oh->step(0.1f);
      const float nd = od->step(0.1f);
      EXPECT_NEAR(nd, nh, 1e-5 * nh) << type;
      for (std::size_t i = 0; i < t.host.size(); ++i)
        ASSERT_LT(test::max_rel_error(t.dev[i].value.to(Device::host()), t.host[i].value), 1e-3) << type << " " << i;
    }
  }
  std::vector<Tensor> src, dst;
  std::vector<kernels::CopyJob> jobs;
  for (int k = 0; k < 200; ++k) {
    src.push_back(test::random_tensor({1 + k % 11}, 300 + k).to(Device::cuda(0)));
    dst.push_back(Tensor::zeros({1 + k % 11}, DType::F32, Device::cuda(0)));
  }
  for (std::size_t k = 0; k < src.size(); ++k) jobs.push_back({&src[k], &dst[k]});
  kernels::copy_tensors(jobs);
  for (std::size_t k = 0; k < src.size(); ++k) ASSERT_EQ(dst[k].to_float_vector(), src[k].to_float_vector()) << k;
}

TEST(OptimCuda, SumOfSquaresIsDeterministicAndMatchesTheHost) {
  GPPF_REQUIRE_GPU();
  for (std::int64_t n : {1, 1000, 1000003, 5000011}) {
    const Tensor x = test::random_tensor({n}, 3);
    const Tensor y = test::random_tensor({n}, 4);
    const Tensor xd = x.to(Device::cuda(0)), yd = y.to(Device::cuda(0));
    Tensor out = Tensor::zeros({4}, DType::I64, Device::cuda(0));
    auto* o = static_cast<double*>(out.data());
    kernels::sum_squares(xd, &yd, o);
    kernels::sum_squares(xd, &yd, o + 2);
    const Tensor back = out.to(Device::host());
    const auto* r = static_cast<const double*>(back.data());
    EXPECT_EQ(std::memcmp(r, r + 2, 2 * sizeof(double)), 0) << n;
    double want[2];
    kernels::sum_squares(x, &y, want);
    EXPECT_NEAR(r[0], want[0], 1e-12 * want[0]) << n;
    EXPECT_NEAR(r[1], want[1], 1e-12 * want[1]) << n;
  }
}

TEST(OptimCuda, LossScalerSkipsOnDeviceOverflowAndWorkingCopyIsBitwise) {
  GPPF_REQUIRE_GPU();
  Twin t = make_twin();
  optim::OptimizerConfig c;
  c.type = "adamw";
  optim::LossScaler scaler;
  auto od = optim::Optimizer::create(c, t.dev_ptrs());
  od->set_loss_scaler(&scaler);
  Tensor bf = Tensor::zeros(t.dev[2].value.shape(), DType::BF16, Device::cuda(0));
  od->set_working_copy(t.dev[2], &bf);
  const Tensor before = t.dev[2].value.to(Device::host());
  std::vector<float> g(static_cast<std::size_t>(t.dev[2].value.numel()), 1.0f);
  g[123] = std::numeric_limits<float>::infinity();
  for (auto& p : t.dev) p.touched = true;
  t.dev[2].grad.copy_from(Tensor::from_vector(t.dev[2].value.shape(), g));
  const float scale = scaler.scale();
  EXPECT_FALSE(std::isfinite(od->step(0.1f)));
  EXPECT_TRUE(od->last_step_skipped());
  EXPECT_EQ(scaler.scale(), scale / 2);
  EXPECT_EQ(test::max_rel_error(t.dev[2].value.to(Device::host()), before), 0.0);

  g[123] = 1.0f;
  t.dev[2].grad.copy_from(Tensor::from_vector(t.dev[2].value.shape(), g));
  for (auto& p : t.dev) p.touched = true;
  EXPECT_TRUE(std::isfinite(od->step(0.1f)));
  const Tensor want = kernels::cast(t.dev[2].value.to(Device::host()), DType::BF16);
  const Tensor got = bf.to(Device::host());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.nbytes()), 0);
}

}  // namespace
}  // namespace gppf
