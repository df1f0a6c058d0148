// The router gradient as a kernel (kernels/routing.hpp): against central differences of the gated
// sum it differentiates, at k = 1, k = 2 and with a shared lego; accumulate mode; host values added;
// sizes past the kernel's fixed arrays refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/graph.hpp"
#include "kernels/routing.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::GradMode;

std::vector<double> softmax(const std::vector<double>& z) {
  double m = z[0], sum = 0;
  for (double v : z) m = std::max(m, v);
  std::vector<double> p(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) sum += p[i] = std::exp(z[i] - m);
  for (double& v : p) v /= sum;
  return p;
}

// f(z) = sum_j D_j g_j(z), g_j = softmax(z)_{routed[j]} (a shared entry's gate is the constant 1):
// its gradient is what router_grad computes from the gate gradients D.
void check_against_differences(const std::vector<double>& z, const std::vector<int>& routed,
                               const std::vector<float>& dgate) {
  const auto p = softmax(z);
  kernels::RouterGradParams params{routed, std::vector<float>(p.begin(), p.end())};
  Tensor dz = Tensor::empty({static_cast<std::int64_t>(z.size())}, DType::F32);
  kernels::router_grad(params, Tensor::from_vector({static_cast<std::int64_t>(dgate.size())}, dgate), dz,
                       GradMode::Overwrite);
  auto f = [&](const std::vector<double>& v) {
    const auto q = softmax(v);
    double s = 0;
    for (std::size_t j = 0; j < routed.size(); ++j) s += dgate[j] * (routed[j] < 0 ? 1.0 : q[routed[j]]);
    return s;
  };
  test::GradCheckOptions o;
  o.step = 1e-4;
  o.rtol = 1e-4;
  o.atol = 1e-6;
  const auto res = test::check_gradient(f, z, test::to_double(dz), o);
  EXPECT_TRUE(res.ok) << res.message();
  for (std::size_t i = 0; i < z.size(); ++i) EXPECT_NE(dz.data_as<float>()[i], 0.0f) << "logit " << i;
}

TEST(RouterGrad, MatchesCentralDifferencesAtTopOneTopTwoAndWithASharedLego) {
  check_against_differences({0.3, -0.2, 0.1, 0.05}, {2}, {0.7f});
  check_against_differences({0.3, -0.2, 0.1, 0.05}, {0, 2}, {0.7f, -1.3f});
  check_against_differences({0.3, -0.2, 0.1}, {-1, 0, 1}, {5.0f, 0.4f, 0.9f});  // shared entry first
}

TEST(RouterGrad, AccumulatesAndAddsHostValues) {
  const std::vector<float> probs = {0.5f, 0.3f, 0.2f};
  Tensor first = Tensor::empty({3}, DType::F32), twice = Tensor::empty({3}, DType::F32);
  const Tensor dgate = Tensor::from_vector({2}, {1.0f, -2.0f});
  kernels::router_grad({{0, 2}, probs}, dgate, first, GradMode::Overwrite);
  kernels::router_grad({{0, 2}, probs}, dgate, twice, GradMode::Overwrite);
  kernels::router_grad({{0, 2}, probs}, dgate, twice, GradMode::Accumulate);
  for (int i = 0; i < 3; ++i) EXPECT_FLOAT_EQ(twice.data_as<float>()[i], 2 * first.data_as<float>()[i]);
  // By hand: inner = 0.5 * 1 + 0.2 * -2 = 0.1; dz = p_i (D_i - inner).
  EXPECT_FLOAT_EQ(first.data_as<float>()[0], 0.5f * (1.0f - 0.1f));
  EXPECT_FLOAT_EQ(first.data_as<float>()[1], 0.3f * (0.0f - 0.1f));
  EXPECT_FLOAT_EQ(first.data_as<float>()[2], 0.2f * (-2.0f - 0.1f));
  kernels::add_router_values({1.0f, 2.0f, 3.0f}, first, GradMode::Accumulate);
  EXPECT_FLOAT_EQ(first.data_as<float>()[2], 0.2f * (-2.0f - 0.1f) + 3.0f);
  kernels::add_router_values({1.0f, 2.0f, 3.0f}, first, GradMode::Overwrite);
  EXPECT_EQ(first.to_float_vector(), (std::vector<float>{1.0f, 2.0f, 3.0f}));
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// Probabilities read from memory (RouterGradParams::probs_at: the step's route table): the same
// values give the same bits as the host floats, and the values in memory are the ones used (the
// host floats then only give the size).
TEST(RouterGrad, ProbabilitiesReadFromMemory) {
  const std::vector<float> probs = {0.5f, 0.3f, 0.2f}, others = {0.1f, 0.6f, 0.3f};
  const Tensor dgate = Tensor::from_vector({3}, {1.0f, -2.0f, 0.75f});
  const std::vector<int> routed = {-1, 0, 2};
  for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
    Tensor a = Tensor::from_vector({3}, {0.5f, 1.0f, -1.0f}), b = a.clone(), c = a.clone();
    kernels::router_grad({routed, probs}, dgate, a, mode);
    kernels::router_grad({routed, probs, Tensor::from_vector({3}, probs)}, dgate, b, mode);
    EXPECT_TRUE(same_bits(a, b));
    Tensor d = c.clone();
    kernels::router_grad({routed, probs, Tensor::from_vector({3}, others)}, dgate, c, mode);
    kernels::router_grad({routed, others}, dgate, d, mode);
    EXPECT_TRUE(same_bits(c, d));
    EXPECT_FALSE(same_bits(a, c));
  }
  Tensor dz = Tensor::empty({3}, DType::F32);
  const std::string msg = test::error_of([&] {
    kernels::router_grad({routed, probs, Tensor::from_vector({2}, {0.5f, 0.5f})}, dgate, dz, GradMode::Overwrite);
  });
  EXPECT_NE(msg.find("router_grad: probs_at expected shape [3]"), std::string::npos) << msg;
}

// Recorded on the host (core/graph.hpp): a replay reads the probabilities and the gate gradients
// then in memory.
TEST(RouterGrad, HostGraphReadsTheProbabilitiesThenInMemory) {
  Tensor probs_at = Tensor::from_vector({3}, {0.5f, 0.3f, 0.2f});
  Tensor dgate = Tensor::from_vector({2}, {1.0f, -2.0f});
  Tensor dz = Tensor::zeros({3}, DType::F32);
  runtime::Graph graph;
  graph.begin_capture(Stream::host());
  kernels::router_grad({{0, 2}, {0.5f, 0.3f, 0.2f}, probs_at}, dgate, dz, GradMode::Overwrite);
  graph.end_capture();
  EXPECT_EQ(dz.to_float_vector(), (std::vector<float>{0, 0, 0}));
  const std::vector<float> now = {0.25f, 0.25f, 0.5f};
  std::memcpy(probs_at.data(), now.data(), sizeof(float) * 3);
  dgate.data_as<float>()[1] = 3.0f;
  graph.launch();
  Tensor want = Tensor::zeros({3}, DType::F32);
  kernels::router_grad({{0, 2}, now}, Tensor::from_vector({2}, {1.0f, 3.0f}), want, GradMode::Overwrite);
  EXPECT_TRUE(same_bits(dz, want));
}

TEST(RouterGrad, RefusesWhatItsFixedArraysCannotHold) {
  const int too_many = kernels::kMaxRouteEntries + 1;
  Tensor dz = Tensor::empty({too_many}, DType::F32);
  const std::vector<float> probs(static_cast<std::size_t>(too_many), 1.0f / too_many);
  EXPECT_THROW(kernels::router_grad({{0}, probs}, Tensor::from_vector({1}, {1.0f}), dz, GradMode::Overwrite), Error);
  Tensor small = Tensor::empty({3}, DType::F32);
  EXPECT_THROW(kernels::router_grad({{0, 5}, {0.2f, 0.3f, 0.5f}}, Tensor::from_vector({2}, {1.0f, 1.0f}), small,
                                    GradMode::Overwrite),
               Error);  // router index 5 of 3
}

}  // namespace
}  // namespace gppf
