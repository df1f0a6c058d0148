// Host graph capture (core/graph.hpp): the kernels/ entry points record their host work instead of
// running it, and a launch reruns it with the tensors and parameters of the capture, as a CUDA graph.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/counters.hpp"
#include "core/error.hpp"
#include "core/graph.hpp"
#include "kernels/attention.hpp"
#include "kernels/batchnorm.hpp"
#include "kernels/cast.hpp"
#include "kernels/concat.hpp"
#include "kernels/conv.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/grouped_gemm.hpp"
#include "kernels/heads.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/linear.hpp"
#include "kernels/loss.hpp"
#include "kernels/merged.hpp"
#include "kernels/optim.hpp"
#include "kernels/pool.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using runtime::Graph;

// Overwrites t's values in place (same storage, same address): what a step does to a captured input.
void set_values(Tensor& t, std::uint64_t seed) {
  if (t.dtype() == DType::I32) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    auto* p = t.data_as<std::int32_t>();
    for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<std::int32_t>(rng() % 12);
    return;
  }
  const Tensor src = test::random_tensor(t.shape(), seed);
  std::memcpy(t.data(), src.data(), t.nbytes());
}

std::vector<unsigned char> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const unsigned char*>(t.data());
  return {p, p + t.nbytes()};
}

// The tensors of a small training-like step over many front-ends. Inputs change between launches;
// parameters and state are updated by the step itself (SGD, running statistics, accumulators).
struct Step {
  // Inputs.
  Tensor x, x2, grad, labels, alpha;
  // Parameters and state.
  Tensor conv_w, conv_b, momentum, gamma, beta, running_mean, running_var, lin_w, lin_b, ln_gamma, ln_beta, gg_b0,
      gg_b1, acc, acc2;
  // Outputs.
  Tensor a, b, conv_y, bn_y, save_mean, save_invstd, pooled, lin_y, snap, ln_y, ln_mean, ln_invstd, gelu_y, q, k, v,
      attn, probs, cat, loss, dlogits, gg_c0, gg_c1, sums;
  // Allocated by the step (from the graph's pool while capturing).
  Tensor cast_out;

  explicit Step(std::uint64_t seed) {
    auto r = [&](const Shape& s) { return test::random_tensor(s, seed++); };
    x = r({4, 6, 6, 8});
    x2 = r({4, 6, 6, 8});
    grad = r({5, 3, 3, 8});
    labels = Tensor::empty({36}, DType::I32);
    set_values(labels, seed++);
    alpha = Tensor::from_vector({1}, {0.75f});
    conv_w = r({5, 3, 3, 8});
    conv_b = r({5});
    momentum = r({5, 3, 3, 8});
    gamma = r({5});
    beta = r({5});
    running_mean = r({5});
    running_var = test::random_tensor({5}, seed++, 0.5, 1.5);
    lin_w = r({12, 5});
    lin_b = r({12});
    ln_gamma = r({12});
    ln_beta = r({12});
    gg_b0 = r({12, 3});
    gg_b1 = r({5, 4});
    acc = r({4, 6, 6, 8});
    acc2 = r({4, 3, 3, 12});
    a = r({4, 6, 6, 8});
    b = r({4, 6, 6, 8});
    conv_y = r({4, 6, 6, 5});
    bn_y = r({4, 6, 6, 5});
    save_mean = r({5});
    save_invstd = r({5});
    pooled = r({4, 3, 3, 5});
    lin_y = r({4, 3, 3, 12});
    snap = r({4, 3, 3, 12});
    ln_y = r({4, 3, 3, 12});
    ln_mean = r({4, 3, 3});
    ln_invstd = r({4, 3, 3});
    gelu_y = r({4, 3, 3, 12});
    q = r({4, 2, 9, 2});
    k = r({4, 2, 9, 2});
    v = r({4, 2, 9, 2});
    attn = r({4, 2, 9, 2});
    probs = r({4, 2, 9, 9});
    cat = r({4, 3, 3, 17});
    loss = r({1});
    dlogits = r({36, 12});
    gg_c0 = r({36, 3});
    gg_c1 = r({36, 4});
    sums = Tensor::zeros({2}, DType::I64);  // two doubles, as optim::SumBuffer
  }

  // Every tensor the step writes or reads, by name.
  std::vector<std::pair<std::string, const Tensor*>> all() const {
    return {{"x", &x},
            {"x2", &x2},
            {"grad", &grad},
            {"labels", &labels},
            {"alpha", &alpha},
            {"conv_w", &conv_w},
            {"conv_b", &conv_b},
            {"momentum", &momentum},
            {"gamma", &gamma},
            {"beta", &beta},
            {"running_mean", &running_mean},
            {"running_var", &running_var},
            {"lin_w", &lin_w},
            {"lin_b", &lin_b},
            {"ln_gamma", &ln_gamma},
            {"ln_beta", &ln_beta},
            {"gg_b0", &gg_b0},
            {"gg_b1", &gg_b1},
            {"acc", &acc},
            {"acc2", &acc2},
            {"a", &a},
            {"b", &b},
            {"conv_y", &conv_y},
            {"bn_y", &bn_y},
            {"save_mean", &save_mean},
            {"save_invstd", &save_invstd},
            {"pooled", &pooled},
            {"lin_y", &lin_y},
            {"snap", &snap},
            {"ln_y", &ln_y},
            {"ln_mean", &ln_mean},
            {"ln_invstd", &ln_invstd},
            {"gelu_y", &gelu_y},
            {"q", &q},
            {"k", &k},
            {"v", &v},
            {"attn", &attn},
            {"probs", &probs},
            {"cat", &cat},
            {"loss", &loss},
            {"dlogits", &dlogits},
            {"gg_c0", &gg_c0},
            {"gg_c1", &gg_c1},
            {"sums", &sums}};
  }

  void new_inputs(std::uint64_t seed) {
    set_values(x, seed);
    set_values(x2, seed + 1);
    set_values(grad, seed + 2);
    set_values(labels, seed + 3);
    alpha.data_as<float>()[0] = 1.5f;
  }

  // The step. Its locals (views, job lists, the parts vector) die when it returns: a captured graph
  // must not need them.
  void run() {
    kernels::relu_fwd(x, a);
    kernels::add(a, x2, b);
    kernels::axpby(0.5f, b, 2.0f, acc);
    kernels::conv2d_fwd({1, 1, 1, 1}, b, conv_w, conv_b, conv_y);
    kernels::batchnorm_fwd_train({}, conv_y, gamma, beta, running_mean, running_var, bn_y, save_mean, save_invstd);
    cast_out = kernels::cast(bn_y, DType::BF16);
    kernels::maxpool2d_fwd({}, bn_y, pooled);
    kernels::linear_fwd(pooled, lin_w, lin_b, lin_y);
    const kernels::CopyJob copy{&lin_y, &snap};
    kernels::copy_tensors(std::span<const kernels::CopyJob>(&copy, 1));
    kernels::axpby_scalar(alpha, lin_y, 0.5f, acc2);
    kernels::layernorm_fwd({}, lin_y, ln_gamma, ln_beta, ln_y, ln_mean, ln_invstd);
    kernels::gelu_fwd(ln_y, gelu_y);
    kernels::split_heads(gelu_y.reshape({4, 9, 12}), 2, q, k, v);
    kernels::sdpa_fwd({}, q, k, v, attn, probs);
    kernels::concat_channels({pooled, lin_y}, cat);
    Tensor logits = lin_y.reshape({36, 12});
    kernels::softmax_cross_entropy({}, logits, labels, loss, kernels::GradMode::Overwrite, &dlogits);
    const Tensor pooled2 = pooled.reshape({36, 5});
    std::vector<kernels::GemmProblem> problems{{&logits, &gg_b0, &gg_c0, 0.0f}, {&pooled2, &gg_b1, &gg_c1, 0.0f}};
    kernels::grouped_gemm(false, false, 1.0f, problems);
    std::vector<kernels::SgdUpdate> updates{{{0.1f, 0.9f, 1e-4f, 1.0f, false}, &conv_w, &grad, &momentum}};
    kernels::sgd_update(updates);
    kernels::sum_squares(grad, &conv_w, reinterpret_cast<double*>(sums.data_as<std::int64_t>()));
  }
};

void expect_same(const Step& got, const Step& want, const std::string& when) {
  const auto g = got.all(), w = want.all();
  for (std::size_t i = 0; i < g.size(); ++i)
    EXPECT_EQ(bytes_of(*g[i].second), bytes_of(*w[i].second)) << g[i].first << " differs " << when;
  EXPECT_EQ(bytes_of(got.cast_out), bytes_of(want.cast_out)) << "cast_out differs " << when;
}

TEST(Graph, HostReplayMatchesEagerOnNewInputValues) {
  Step captured(7), eager(7);
  std::vector<std::vector<unsigned char>> before;
  for (const auto& [name, t] : captured.all()) before.push_back(bytes_of(*t));

  Graph graph;
  const auto c0 = runtime::counters();
  graph.begin_capture(Stream::host());
  EXPECT_TRUE(runtime::capturing());
  captured.run();
  graph.end_capture();
  const auto during = runtime::counters() - c0;
  EXPECT_FALSE(runtime::capturing());
  ASSERT_TRUE(graph.ready());
  EXPECT_EQ(graph.nodes(), 20u);      // one per front-end call, two for linear_fwd (bias broadcast, GEMM)
  EXPECT_GT(graph.pool_bytes(), 0u);  // cast_out and the step's temporaries
  EXPECT_EQ(during.syncs, 0);

  // Nothing ran while capturing.
  const auto all = captured.all();
  for (std::size_t i = 0; i < all.size(); ++i)
    EXPECT_EQ(bytes_of(*all[i].second), before[i]) << all[i].first << " was written during the capture";

  // The capture counted the launches of an eager step; a launch counts one.
  const auto e0 = runtime::counters();
  eager.run();
  EXPECT_EQ(during.launches, (runtime::counters() - e0).launches);
  const auto l0 = runtime::counters();
  graph.launch();
  EXPECT_EQ((runtime::counters() - l0).launches, 1);
  expect_same(captured, eager, "after the first launch");

  // New values in the same tensors: a replay computes on them (and on the state the last one left).
  for (std::uint64_t round = 0; round < 2; ++round) {
    captured.new_inputs(100 + 10 * round);
    eager.new_inputs(100 + 10 * round);
    graph.launch();
    eager.run();
    expect_same(captured, eager, "after a launch on new inputs, round " + std::to_string(round));
  }
}

// A replay reruns the work with the parameters of the capture, as a CUDA graph: a scalar passed as an
// argument is baked in; a value that must change per step is read from memory (axpby_scalar).
TEST(Graph, ReplayUsesTheCapturedScalars) {
  Tensor x = Tensor::from_vector({3}, {1, 2, 3});
  Tensor y = Tensor::zeros({3}, DType::F32);
  Tensor z = Tensor::zeros({3}, DType::F32);
  Tensor alpha_t = Tensor::from_vector({1}, {2.0f});
  float alpha = 2.0f;
  Graph graph;
  graph.begin_capture(Stream::host());
  kernels::axpby(alpha, x, 0.0f, y);
  kernels::axpby_scalar(alpha_t, x, 0.0f, z);
  graph.end_capture();
  EXPECT_EQ(graph.nodes(), 2u);

  alpha = 3.0f;  // too late: the graph holds 2
  alpha_t.data_as<float>()[0] = 3.0f;
  x.data_as<float>()[2] = 10.0f;
  graph.launch();
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{2, 4, 20}));
  EXPECT_EQ(z.to_float_vector(), (std::vector<float>{3, 6, 30}));
  graph.launch();
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{2, 4, 20}));
  EXPECT_EQ(alpha, 3.0f);
}

TEST(Graph, SyncInsideCaptureThrowsAndGraphCanBeRecaptured) {
  Tensor x = Tensor::from_vector({4}, {-1, 2, -3, 4});
  Tensor y = Tensor::from_vector({4}, {9, 9, 9, 9});
  Graph graph;
  graph.begin_capture(Stream::host());
  kernels::relu_fwd(x, y);
  const std::string err = test::error_of([&] { read_back(y); });
  EXPECT_NE(err.find("captured graph"), std::string::npos) << err;
  graph.abort_capture();
  EXPECT_FALSE(runtime::capturing());
  EXPECT_FALSE(graph.ready());
  EXPECT_EQ(graph.nodes(), 0u);
  EXPECT_THROW(graph.launch(), Error);
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{9, 9, 9, 9}));  // the aborted work never runs

  // Eager work runs again, and the same graph captures anew.
  EXPECT_NO_THROW(read_back(y));
  graph.begin_capture(Stream::host());
  kernels::relu_fwd(x, y);
  graph.end_capture();
  EXPECT_EQ(graph.nodes(), 1u);
  graph.launch();
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{0, 2, 0, 4}));
}

// Captures x -> relu -> (+ x) -> * 3 -> y through temporaries allocated and dropped inside.
void capture_with_temporaries(Graph& graph, const Tensor& x, Tensor& y) {
  graph.begin_capture(Stream::host());
  {
    Tensor t1 = Tensor::empty(x.shape(), DType::F32);
    Tensor t2 = Tensor::empty(x.shape(), DType::F32);
    kernels::relu_fwd(x, t1);
    kernels::add(t1, x, t2);
    const Tensor flat = t2.reshape({-1});
    Tensor out = y.reshape({-1});
    kernels::axpby(3.0f, flat, 0.0f, out);
  }
  graph.end_capture();
}

TEST(Graph, CaptureTemporariesComeFromThePoolAndOutliveTheCapture) {
  Tensor x = test::random_tensor({64, 33}, 3);
  Tensor y = Tensor::zeros({64, 33}, DType::F32);
  Graph graph;
  capture_with_temporaries(graph, x, y);
  EXPECT_GT(graph.pool_bytes(), 0u);
  // Allocations after the capture come from the usual allocators again.
  EXPECT_EQ(runtime::capture_pool(Device::host()), nullptr);

  for (std::uint64_t seed = 4; seed < 7; ++seed) {
    set_values(x, seed);
    graph.launch();
    const std::vector<float> xs = x.to_float_vector(), ys = y.to_float_vector();
    for (std::size_t i = 0; i < xs.size(); ++i)
      ASSERT_EQ(ys[i], 3.0f * ((xs[i] > 0.0f ? xs[i] : 0.0f) + xs[i])) << "element " << i;
  }
}

TEST(Graph, FrontEndsReturningHostValuesThrowWhileCapturing) {
  Tensor y = test::random_tensor({8, 4}, 1), dy = test::random_tensor({8, 4}, 2),
         da = Tensor::zeros({8, 4}, DType::F32);
  Tensor logits = test::random_tensor({8, 4}, 3);
  Tensor labels = Tensor::zeros({8}, DType::I32);
  Graph graph;
  graph.begin_capture(Stream::host());
  const auto expect_refused = [](const char* op, const std::function<void()>& f) {
    const std::string err = test::error_of(f);
    EXPECT_NE(err.find(op), std::string::npos) << err;
    EXPECT_NE(err.find("cannot run inside a captured graph"), std::string::npos) << err;
  };
  expect_refused("relu_bwd_channel_sums", [&] { kernels::relu_bwd_channel_sums(y, dy, Tensor(), Tensor(), da); });
  expect_refused("batchnorm_channel_sums",
                 [&] { kernels::batchnorm_channel_sums(false, y, Tensor(), Tensor(), Tensor(), Tensor()); });
  expect_refused("topk_correct", [&] { kernels::topk_correct(logits, labels, 2); });
  EXPECT_EQ(da.to_float_vector(), std::vector<float>(32, 0.0f));
  graph.abort_capture();

  // Eager, they run.
  EXPECT_EQ(kernels::relu_bwd_channel_sums(y, dy, Tensor(), Tensor(), da).size(), 8u);
  EXPECT_EQ(kernels::topk_correct(logits, labels, 2).size(), 2u);
}

}  // namespace
}  // namespace gppf
