// Lego layer and router: forward against a hand-assembled path, backward (input, weights and the
// router logits) against central differences of the float forward, routing rules, untouched legos.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>

#include "kernels/elementwise.hpp"
#include "src/nn/backbone.hpp"
#include "src/nn/lego_strategy.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf::nn {
namespace {

LegoLayerSpec small_spec(int stride, int cin, int cout, int top_k = 2) {
  LegoLayerSpec s;
  s.in_channels = cin;
  s.out_channels = cout;
  s.stride = stride;
  s.num_legos = 4;
  s.top_k = top_k;
  s.lego_width = 3;
  return s;
}

// A layer's forward and backward with its saved context held here between the two (one per layer).
std::map<const LegoLayer*, std::unique_ptr<LegoContext>>& contexts() {
  static std::map<const LegoLayer*, std::unique_ptr<LegoContext>> saved;
  return saved;
}
Tensor fwd(LegoLayer& layer, const RunState& rs, const Tensor& x, std::int64_t step) {
  LegoLayer::Output out = layer.forward(rs, x, step);
  contexts()[&layer] = std::move(out.saved);
  return out.y;
}
Tensor bwd(LegoLayer& layer, const RunState& rs, const Tensor& dy) {
  return layer.backward(rs, dy, std::move(contexts()[&layer]));
}

double weighted_sum(const Tensor& y, const Tensor& r) {
  double s = 0;
  for (std::int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.data_as<float>()[i]) * r.data_as<float>()[i];
  return s;
}

TEST(Router, TopKIsDeterministicAndGatesAreTheFullSoftmax) {
  std::mt19937_64 rng(1);
  LegoLayer layer("l", small_spec(1, 4, 4), 2, RoutingOptions{}, rng);
  float* z = layer.router(0).value.data_as<float>();
  z[0] = 0.1f, z[1] = 2.0f, z[2] = -1.0f, z[3] = 1.0f;
  const Route r = layer.route(0, 100, true);
  ASSERT_EQ(r.legos, (std::vector<int>{1, 3}));
  // Not renormalised over the selected legos: top-1 would be a constant gate 1 with no gradient.
  const double sum = std::exp(0.1) + std::exp(2.0) + std::exp(-1.0) + std::exp(1.0);
  EXPECT_NEAR(r.gates[0], std::exp(2.0) / sum, 1e-6);
  EXPECT_NEAR(r.gates[1], std::exp(1.0) / sum, 1e-6);
  ASSERT_EQ(r.probs.size(), 4u);
  EXPECT_NEAR(r.probs[0], std::exp(0.1) / sum, 1e-6);
  // Ties go to the lower index.
  z[0] = z[1] = z[2] = z[3] = 0.5f;
  EXPECT_EQ(layer.route(0, 100, true).legos, (std::vector<int>{0, 1}));
}

TEST(Router, WarmupModes) {
  std::mt19937_64 rng(2);
  RoutingOptions soft;
  soft.warmup = RoutingOptions::Warmup::Soft;
  soft.warmup_steps = 10;
  LegoLayer layer("l", small_spec(1, 4, 4), 1, soft, rng);
  EXPECT_EQ(layer.route(0, 3, true).legos.size(), 4u);   // soft: every lego
  EXPECT_EQ(layer.route(0, 3, false).legos.size(), 2u);  // inference: never soft
  EXPECT_EQ(layer.route(0, 10, true).legos.size(), 2u);  // after warm-up
  RoutingOptions noisy;
  noisy.warmup_steps = 1000;
  noisy.noise_std = 5.0f;
  LegoLayer noisy_layer("n", small_spec(1, 4, 4), 1, noisy, rng);
  bool changed = false;
  const auto clean = noisy_layer.route(0, 2000, true).legos;
  for (int step = 0; step < 50; ++step) {
    EXPECT_EQ(noisy_layer.route(0, step, true).legos, noisy_layer.route(0, step, true).legos);  // seeded
    changed |= noisy_layer.route(0, step, true).legos != clean;
  }
  EXPECT_TRUE(changed);
}

TEST(Router, SharedLegosAreAlwaysOn) {
  std::mt19937_64 rng(3);
  auto spec = small_spec(1, 4, 4);
  spec.num_shared = 1;
  LegoLayer layer("l", spec, 1, RoutingOptions{}, rng);
  const Route r = layer.route(0, 5, true);
  ASSERT_EQ(r.legos.size(), 3u);
  EXPECT_EQ(r.legos[0], 0);
  EXPECT_EQ(r.gates[0], 1.0f);
  EXPECT_EQ(r.routed[0], -1);
}

// Gradient of sum(r * layer(x)) with respect to x, one lego weight and the router logits, against
// central differences of the float forward (training-mode BN included).
void check_lego_gradients(int stride, int cin, int cout, int top_k = 2, bool per_lego = false) {
  std::mt19937_64 rng(7);
  LegoLayer layer("l", small_spec(stride, cin, cout, top_k), 2, RoutingOptions{}, rng);
  if (per_lego) layer.set_strategy(make_per_lego_strategy());
  RunState rs;
  rs.task = 1;
  Tensor x = test::random_tensor({3, 5, 4, cin}, 11);
  Tensor y = fwd(layer, rs, x, 50);
  Tensor r = test::random_tensor(y.shape(), 12);
  Tensor dx = bwd(layer, rs, r);

  std::vector<Parameter*> params;
  layer.collect_parameters(params);
  const Route route = layer.route(1, 50, true);
  Parameter* router = &layer.router(1);
  Parameter* active_weight = nullptr;
  for (Parameter* p : params)
    if (p->name == str("l.lego", route.legos[0], ".conv2.weight")) active_weight = p;
  ASSERT_NE(active_weight, nullptr);

  auto loss_with = [&](Tensor& target) {
    return [&, target](const std::vector<double>& v) mutable {
      for (std::size_t i = 0; i < v.size(); ++i) target.data_as<float>()[i] = static_cast<float>(v[i]);
      RunState eval = rs;
      Tensor out = fwd(layer, eval, x, 50);
      bwd(layer, eval, r);  // keep the saved state paired
      return weighted_sum(out, r);
    };
  };
  test::GradCheckOptions o;
  o.step = 1e-3;
  o.rtol = 3e-2;
  o.atol = 2e-2;
  o.max_checks = 40;

  const Tensor router_grad = router->grad.clone();
  const Tensor weight_grad = active_weight->grad.clone();
  {
    Tensor xs = x;
    const auto orig = test::to_double(x);
    const auto res = test::check_gradient(loss_with(xs), orig, test::to_double(dx), o);
    EXPECT_TRUE(res.ok) << "dx " << res.message();
    loss_with(xs)(orig);
  }
  {
    Tensor w = active_weight->value;
    const auto orig = test::to_double(w);
    const auto res = test::check_gradient(loss_with(w), orig, test::to_double(weight_grad), o);
    EXPECT_TRUE(res.ok) << "dW " << res.message();
    loss_with(w)(orig);
  }
  {
    Tensor z = router->value;
    const auto res = test::check_gradient(loss_with(z), test::to_double(z), test::to_double(router_grad), o);
    EXPECT_TRUE(res.ok) << "d router " << res.message();
    // Every logit moves the gates through the softmax over all legos, at k = 1 too (a softmax over
    // the selected logits alone gave top-1 routers no gradient).
    for (float g : router_grad.to_float_vector()) EXPECT_GT(std::abs(g), 1e-6f);
  }
}

TEST(LegoLayer, GradientsIdentityShortcut) { check_lego_gradients(1, 4, 4); }
TEST(LegoLayer, GradientsProjectionShortcut) { check_lego_gradients(2, 3, 6); }
// The per-lego strategy (the CUDA path) at k = 2: its gate gradients stay on the device and the router's
// gradient is computed there (kernels::router_grad).
TEST(LegoLayer, GradientsPerLegoTopTwo) {
  check_lego_gradients(1, 4, 4, 2, true);
  check_lego_gradients(2, 3, 6, 2, true);
}
TEST(LegoLayer, GradientsTopOne) {
  check_lego_gradients(1, 4, 4, 1);
  check_lego_gradients(2, 3, 6, 1);
}

TEST(LegoLayer, ForwardIsShortcutPlusGatedLegos) {
  auto spec = small_spec(1, 4, 4);
  spec.num_legos = 2;
  std::mt19937_64 rng(9);
  LegoLayer layer("l", spec, 1, RoutingOptions{}, rng);
  // The same legos, built from the same random stream, run by hand.
  std::mt19937_64 rng2(9);
  Bottleneck b0("l.lego0", 4, spec.lego_width, 4, 1, 1, rng2);
  Bottleneck b1("l.lego1", 4, spec.lego_width, 4, 1, 1, rng2);
  RunState rs;
  rs.training = false;  // running statistics: each lego is a fixed function of its input
  Tensor x = test::random_tensor({2, 3, 3, 4}, 5);
  Tensor y = fwd(layer, rs, x, 0);
  const Route r = layer.route(0, 0, false);
  ASSERT_EQ(r.legos, (std::vector<int>{0, 1}));
  const auto o0 = b0.forward(rs, x).to_float_vector(), o1 = b1.forward(rs, x).to_float_vector();
  const auto xv = x.to_float_vector(), yv = y.to_float_vector();
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const double expect = std::max(0.0, static_cast<double>(xv[i]) + r.gates[0] * o0[i] + r.gates[1] * o1[i]);
    ASSERT_NEAR(yv[i], expect, 1e-5) << i;
  }
}

TEST(LegoLayer, UnusedLegosAreUntouched) {
  std::mt19937_64 rng(4);
  LegoLayer layer("l", small_spec(1, 4, 4), 1, RoutingOptions{}, rng);
  RunState rs;
  Tensor x = test::random_tensor({2, 4, 4, 4}, 1);
  Tensor y = fwd(layer, rs, x, 10);
  bwd(layer, rs, test::random_tensor(y.shape(), 2));
  const Route r = layer.route(0, 10, true);
  std::vector<Parameter*> params;
  layer.collect_parameters(params);
  int touched = 0, untouched = 0;
  for (Parameter* p : params) {
    const bool used = p->name.find(str("lego", r.legos[0], ".")) != std::string::npos ||
                      p->name.find(str("lego", r.legos[1], ".")) != std::string::npos ||
                      p->name.find("router") != std::string::npos;
    EXPECT_EQ(p->touched, used) << p->name;
    (p->touched ? touched : untouched)++;
  }
  EXPECT_GT(untouched, 0);
  EXPECT_GT(touched, 0);
}

// The merged path (a task's active legos as one wide block, the default) against the same layer run
// lego by lego: outputs, input gradient, every parameter's gradient and touched flag, and the per-task
// running statistics, in training (several steps, gradients accumulated over two tasks) and in
// inference; with identity and projection shortcuts and an always-on shared lego.
void check_merged_matches_one_by_one(int stride, int cin, int cout, int shared, int width = 3) {
  auto spec = small_spec(stride, cin, cout);
  spec.num_shared = shared;
  spec.lego_width = width;
  std::mt19937_64 rng_a(21), rng_b(21);
  RoutingOptions ro;
  ro.init_std = 1.0f;
  LegoLayer merged("l", spec, 2, ro, rng_a), single("l", spec, 2, ro, rng_b);
  single.set_strategy(make_per_lego_strategy());
  std::vector<Parameter*> pm, ps;
  merged.collect_parameters(pm);
  single.collect_parameters(ps);
  std::vector<Buffer> bm, bs;
  merged.collect_buffers(bm);
  single.collect_buffers(bs);
  ASSERT_EQ(pm.size(), ps.size());
  for (int step = 0; step < 3; ++step) {
    for (Parameter* p : pm) p->clear_grad();
    for (Parameter* p : ps) p->clear_grad();
    for (int task = 0; task < 2; ++task) {
      SCOPED_TRACE(str("step ", step, " task ", task));
      RunState rs;
      rs.task = task;
      const Tensor x = test::random_tensor({3, 6, 5, cin}, 100 + static_cast<std::uint64_t>(step * 2 + task));
      const Tensor ym = fwd(merged, rs, x, step), ys = fwd(single, rs, x, step);
      EXPECT_LT(test::max_rel_error(ym, ys), 1e-5);
      const Tensor dy = test::random_tensor(ym.shape(), 200 + static_cast<std::uint64_t>(step));
      const Tensor dxm = bwd(merged, rs, dy), dxs = bwd(single, rs, dy);
      EXPECT_LT(test::max_rel_error(dxm, dxs), 1e-4);
    }
    for (std::size_t i = 0; i < pm.size(); ++i) {
      ASSERT_EQ(pm[i]->touched, ps[i]->touched) << pm[i]->name;
      if (pm[i]->touched) {
        EXPECT_LT(test::max_rel_error(pm[i]->grad, ps[i]->grad), 1e-4) << pm[i]->name;
      }
    }
  }
  for (std::size_t i = 0; i < bm.size(); ++i)
    EXPECT_LT(test::max_rel_error(*bm[i].tensor, *bs[i].tensor), 1e-5) << bm[i].name;
  RunState eval;
  eval.training = false;
  eval.task = 1;
  const Tensor x = test::random_tensor({2, 6, 5, cin}, 300);
  EXPECT_LT(test::max_rel_error(fwd(merged, eval, x, 10), fwd(single, eval, x, 10)), 1e-5);
}

TEST(LegoLayer, MergedMatchesOneByOneIdentity) { check_merged_matches_one_by_one(1, 4, 4, 0); }
TEST(LegoLayer, MergedMatchesOneByOneProjection) { check_merged_matches_one_by_one(2, 3, 6, 0); }
TEST(LegoLayer, MergedMatchesOneByOneWithSharedLego) { check_merged_matches_one_by_one(1, 5, 8, 1); }
// 2 legos of width 4 and 8: the folded stage's compile-time row widths 8 and 16 (gppf-mini's).
TEST(LegoLayer, MergedMatchesOneByOneMiniWidths) {
  check_merged_matches_one_by_one(1, 6, 12, 0, 4);
  check_merged_matches_one_by_one(2, 12, 16, 0, 8);
}

// gppf finetune freezes the backbone: frozen convolutions (the 4-D weights) get no gradient and stay
// untouched, on the merged and the lego-by-lego path, while the input gradient, BN and router
// gradients are those of the trainable layer.
TEST(LegoLayer, FrozenConvolutionsGetNoGradient) {
  for (const bool merge : {true, false}) {
    SCOPED_TRACE(merge ? "merged" : "one by one");
    std::mt19937_64 rng_a(8), rng_b(8);
    RoutingOptions ro;
    ro.init_std = 1.0f;
    LegoLayer frozen("l", small_spec(2, 3, 6), 1, ro, rng_a), free("l", small_spec(2, 3, 6), 1, ro, rng_b);
    frozen.set_strategy(merge ? make_merged_strategy() : make_per_lego_strategy());
    free.set_strategy(merge ? make_merged_strategy() : make_per_lego_strategy());
    std::vector<Parameter*> pf, pt;
    frozen.collect_parameters(pf);
    free.collect_parameters(pt);
    for (Parameter* p : pf) p->trainable = p->value.ndim() != 4;
    RunState rs;
    const Tensor x = test::random_tensor({3, 6, 5, 3}, 31);
    const Tensor y = fwd(frozen, rs, x, 0);
    EXPECT_EQ(test::max_rel_error(y, fwd(free, rs, x, 0)), 0.0);
    const Tensor dy = test::random_tensor(y.shape(), 32);
    EXPECT_LT(test::max_rel_error(bwd(frozen, rs, dy), bwd(free, rs, dy)), 1e-6);
    int convs = 0;
    for (std::size_t i = 0; i < pf.size(); ++i) {
      if (pf[i]->value.ndim() == 4) {
        EXPECT_FALSE(pf[i]->touched) << pf[i]->name;
        convs += pt[i]->touched;
      } else {
        ASSERT_EQ(pf[i]->touched, pt[i]->touched) << pf[i]->name;
        if (pf[i]->touched) {
          EXPECT_LT(test::max_rel_error(pf[i]->grad, pt[i]->grad), 1e-5) << pf[i]->name;
        }
      }
    }
    EXPECT_GE(convs, 7);  // two legos' three convolutions and the projection
  }
}

// forward returns the saved context that backward consumes: two micro-batches in flight (forward
// A, forward B, backward B, backward A) give the gradients of running them one after the other.
TEST(LegoLayer, TwoMicroBatchesInFlight) {
  for (const bool merge : {true, false}) {
    SCOPED_TRACE(merge ? "merged" : "per-lego");
    std::mt19937_64 rng_a(12), rng_b(12);
    RoutingOptions ro;
    ro.init_std = 1.0f;
    LegoLayer inflight("l", small_spec(2, 3, 6), 2, ro, rng_a), serial("l", small_spec(2, 3, 6), 2, ro, rng_b);
    for (LegoLayer* l : {&inflight, &serial})
      l->set_strategy(merge ? make_merged_strategy() : make_per_lego_strategy());
    EXPECT_STREQ(inflight.strategy().name(), merge ? "merged" : "per-lego");
    RunState a, b;
    a.task = 0;
    b.task = 1;
    const Tensor xa = test::random_tensor({3, 6, 5, 3}, 41), xb = test::random_tensor({2, 6, 5, 3}, 42);
    LegoLayer::Output oa = inflight.forward(a, xa, 7), ob = inflight.forward(b, xb, 7);
    const Tensor dya = test::random_tensor(oa.y.shape(), 43), dyb = test::random_tensor(ob.y.shape(), 44);
    const Tensor dxb = inflight.backward(b, dyb, std::move(ob.saved));
    const Tensor dxa = inflight.backward(a, dya, std::move(oa.saved));
    LegoLayer::Output sa = serial.forward(a, xa, 7);
    EXPECT_EQ(test::max_rel_error(sa.y, oa.y), 0.0);
    EXPECT_EQ(test::max_rel_error(serial.backward(a, dya, std::move(sa.saved)), dxa), 0.0);
    LegoLayer::Output sb = serial.forward(b, xb, 7);
    EXPECT_EQ(test::max_rel_error(sb.y, ob.y), 0.0);
    EXPECT_EQ(test::max_rel_error(serial.backward(b, dyb, std::move(sb.saved)), dxb), 0.0);
    std::vector<Parameter*> pi, ps;
    inflight.collect_parameters(pi);
    serial.collect_parameters(ps);
    for (std::size_t i = 0; i < pi.size(); ++i) {
      ASSERT_EQ(pi[i]->touched, ps[i]->touched) << pi[i]->name;
      if (pi[i]->touched) {
        EXPECT_LT(test::max_rel_error(pi[i]->grad, ps[i]->grad), 1e-6) << pi[i]->name;
      }
    }
  }
}

TEST(LegoLayer, BackwardWithoutContextNamesTheLayer) {
  std::mt19937_64 rng(13);
  LegoLayer layer("stage1.block0", small_spec(1, 4, 4), 1, RoutingOptions{}, rng);
  RunState eval;
  eval.training = false;
  const LegoLayer::Output out = layer.forward(eval, test::random_tensor({1, 3, 3, 4}, 1), 0);
  EXPECT_FALSE(out.saved);  // inference keeps nothing
  try {
    layer.backward(RunState{}, out.y, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("stage1.block0: backward without a training forward"), std::string::npos)
        << e.what();
  }
}

// Parameter::owner: routed legos by their router index, shared legos and the projection as Shared
// of the layer, routers by task.
TEST(LegoLayer, ParametersCarryTheirOwner) {
  std::mt19937_64 rng(14);
  auto spec = small_spec(2, 3, 6);
  spec.num_shared = 1;
  LegoLayer layer("stage2.block0", spec, 2, RoutingOptions{}, rng);
  layer.set_index(3);
  std::vector<Parameter*> params;
  layer.collect_parameters(params);
  int legos = 0, routers = 0;
  for (Parameter* p : params) {
    SCOPED_TRACE(p->name);
    EXPECT_EQ(p->owner.layer, 3);
    if (p->name.find(".lego") != std::string::npos) {
      EXPECT_EQ(p->owner.kind, Owner::Kind::Lego);
      EXPECT_NE(p->name.find(str(".lego", p->owner.lego, ".")), std::string::npos);
      ++legos;
    } else if (p->name.find(".router.task") != std::string::npos) {
      EXPECT_EQ(p->owner.kind, Owner::Kind::Router);
      EXPECT_EQ(p->name, str("stage2.block0.router.task", p->owner.task));
      ++routers;
    } else {
      EXPECT_EQ(p->owner.kind, Owner::Kind::Shared);
      EXPECT_EQ(p->owner.lego, p->name.find(".shared0.") != std::string::npos ? 0 : -1);
    }
  }
  EXPECT_EQ(legos, 4 * 9);  // 3 convs, 2 x 3 BN parameters per lego
  EXPECT_EQ(routers, 2);
}

TEST(LegoLayer, BalanceRegulariserGradient) {
  std::mt19937_64 rng(5);
  RoutingOptions ro;
  ro.balance_weight = 0.5f;
  ro.init_std = 1.0f;
  LegoLayer layer("l", small_spec(1, 4, 4), 3, ro, rng);
  const std::vector<int> tasks{0, 2};
  for (int t : tasks) layer.router(t).clear_grad();
  layer.apply_balance(tasks);
  std::vector<double> z, g;
  for (int t : tasks)
    for (int i = 0; i < 4; ++i) {
      z.push_back(layer.router(t).value.data_as<float>()[i]);
      g.push_back(layer.router(t).grad.data_as<float>()[i]);
    }
  auto f = [&](const std::vector<double>& v) {
    for (std::size_t n = 0; n < tasks.size(); ++n)
      for (int i = 0; i < 4; ++i)
        layer.router(tasks[n]).value.data_as<float>()[i] = static_cast<float>(v[n * 4 + static_cast<std::size_t>(i)]);
    for (int t : tasks) layer.router(t).clear_grad();
    return static_cast<double>(layer.apply_balance(tasks));
  };
  test::GradCheckOptions o;
  o.step = 1e-3;
  o.rtol = 1e-2;
  o.atol = 1e-4;
  const auto res = test::check_gradient(f, z, g, o);
  EXPECT_TRUE(res.ok) << res.message();
  EXPECT_FALSE(layer.router(1).touched);
}

// ---- routing values in memory (RouteTable, Backbone::prepare_routes) --------------------------

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.defined() == b.defined() && a.numel() == b.numel() && a.dtype() == b.dtype() &&
         std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// Sets task t's router logits of both layers to the same new values (an optimizer step), and their
// host copies.
void new_logits(const std::vector<RoutedLayer*>& layers, int tasks, std::uint64_t seed) {
  for (int t = 0; t < tasks; ++t) {
    const Tensor z =
        test::random_tensor({layers[0]->router(t).value.numel()}, seed + static_cast<std::uint64_t>(t), -2.0, 2.0);
    for (RoutedLayer* l : layers) {
      l->router(t).value.copy_from(z);
      l->set_router_copy(t, z.to_float_vector());
    }
  }
}

enum class Run { PerLego, Merged, Batched };

// Three training steps of `tasks` tasks (one pass each, or one task-batched pass of `count` samples
// per task) through two layers built alike, the second with its routes prepared in a RouteTable
// before each step, so that its kernels read the gates and probabilities from the table: outputs,
// input gradients, every parameter's gradient (routers included) and the running statistics are the
// same bits. `keys` (when non-null) gets the steps' routing keys.
void check_table_bitwise(const LegoLayerSpec& spec, const RoutingOptions& ro, Run run, int tasks = 2,
                         std::int64_t count = 2, std::vector<std::vector<int>>* keys = nullptr) {
  std::mt19937_64 ra(31), rb(31);
  LegoLayer plain("l", spec, tasks, ro, ra), tabled("l", spec, tasks, ro, rb);
  for (LegoLayer* l : {&plain, &tabled})
    l->set_strategy(run == Run::Merged ? make_merged_strategy() : make_per_lego_strategy());
  std::vector<Parameter*> pp, pt;
  plain.collect_parameters(pp);
  tabled.collect_parameters(pt);
  std::vector<Buffer> bp, bt;
  plain.collect_buffers(bp);
  tabled.collect_buffers(bt);
  std::vector<int> all(static_cast<std::size_t>(tasks));
  std::iota(all.begin(), all.end(), 0);
  RouteTable table;
  for (std::int64_t step = 0; step < 3; ++step) {
    SCOPED_TRACE(str("step ", step));
    new_logits({&plain, &tabled}, tasks, 500 + static_cast<std::uint64_t>(step) * 10);
    for (Parameter* p : pp) p->clear_grad();
    for (Parameter* p : pt) p->clear_grad();
    const std::vector<int> key = table.prepare({&tabled}, all, step, true, Stream::host());
    if (keys) keys->push_back(key);
    for (int t = 0; t < tasks; ++t) {
      const Route a = plain.route(t, step, true), b = tabled.route(t, step, true);
      EXPECT_FALSE(a.gate_values.defined());
      ASSERT_TRUE(b.gate_values.defined() && b.prob_values.defined());
      EXPECT_EQ(a.legos, b.legos);
      EXPECT_EQ(a.gates, b.gates);
      EXPECT_EQ(a.probs, b.probs);
      EXPECT_EQ(b.gate_values.to_float_vector(), b.gates);
      EXPECT_EQ(b.prob_values.to_float_vector(), b.probs);
    }
    auto pass = [&](const RunState& rs, const Tensor& x, std::uint64_t seed) {
      LegoLayer::Output op = plain.forward(rs, x, step), ot = tabled.forward(rs, x, step);
      EXPECT_TRUE(same_bits(op.y, ot.y)) << "y";
      const Tensor dy = test::random_tensor(op.y.shape(), seed);
      EXPECT_TRUE(same_bits(plain.backward(rs, dy, std::move(op.saved)), tabled.backward(rs, dy, std::move(ot.saved))))
          << "dx";
    };
    if (run == Run::Batched) {
      RunState rs;
      rs.task = -1;
      for (int t = 0; t < tasks; ++t) rs.segments.push_back({t, count});
      pass(rs, test::random_tensor({tasks * count, 4, 4, spec.in_channels}, 600 + static_cast<std::uint64_t>(step)),
           700);
    } else {
      for (int t = 0; t < tasks; ++t) {
        RunState rs;
        rs.task = t;
        pass(rs, test::random_tensor({3, 4, 4, spec.in_channels}, 600 + static_cast<std::uint64_t>(step * 5 + t)),
             700 + static_cast<std::uint64_t>(t));
      }
    }
    int routers = 0;
    for (std::size_t i = 0; i < pp.size(); ++i) {
      ASSERT_EQ(pp[i]->touched, pt[i]->touched) << pp[i]->name;
      if (!pp[i]->touched) continue;
      EXPECT_TRUE(same_bits(pp[i]->grad, pt[i]->grad)) << pp[i]->name;
      routers += pp[i]->owner.kind == Owner::Kind::Router;
    }
    EXPECT_EQ(routers, tasks);
    for (std::size_t i = 0; i < bp.size(); ++i) EXPECT_TRUE(same_bits(*bp[i].tensor, *bt[i].tensor)) << bp[i].name;
  }
}

RoutingOptions soft_warmup(std::int64_t steps) {
  RoutingOptions ro;
  ro.warmup = RoutingOptions::Warmup::Soft;
  ro.warmup_steps = steps;
  return ro;
}

TEST(RouteTable, PerLegoIsBitForBitTheHostFloats) {
  check_table_bitwise(small_spec(1, 4, 4), RoutingOptions{}, Run::PerLego);
  check_table_bitwise(small_spec(2, 3, 6, 1), RoutingOptions{}, Run::PerLego);
  auto shared = small_spec(1, 4, 4);
  shared.num_shared = 1;
  check_table_bitwise(shared, soft_warmup(2), Run::PerLego);
}

// The merged strategy's own block takes host gates (src/nn/merged_legos.cpp); its per-lego fallback
// and its router gradient read the table.
TEST(RouteTable, MergedIsBitForBitTheHostFloats) {
  check_table_bitwise(small_spec(1, 4, 4), RoutingOptions{}, Run::Merged);
  check_table_bitwise(small_spec(1, 4, 4, 1), RoutingOptions{}, Run::Merged);
}

TEST(RouteTable, TaskBatchedIsBitForBitTheHostFloats) {
  check_table_bitwise(small_spec(1, 4, 4), RoutingOptions{}, Run::Batched);
  check_table_bitwise(small_spec(2, 3, 6), RoutingOptions{}, Run::Batched, 3, 1);
  auto shared = small_spec(1, 4, 4);
  shared.num_shared = 1;
  check_table_bitwise(shared, soft_warmup(2), Run::Batched);
  // 17 tasks at k = 2: 34 parts, more than one fused pass takes (the unfused gated sum).
  check_table_bitwise(small_spec(1, 4, 4), RoutingOptions{}, Run::Batched, 17, 1);
}

// The key: each task's legos then -1, or -2 for a soft warm-up route (every lego on).
TEST(RouteTable, KeyNamesTheLegosAndTheSoftWarmup) {
  auto spec = small_spec(1, 4, 4);
  spec.num_shared = 1;
  std::vector<std::vector<int>> keys;
  check_table_bitwise(spec, soft_warmup(2), Run::PerLego, 2, 2, &keys);
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys[0], (std::vector<int>{0, 1, 2, 3, 4, -2, 0, 1, 2, 3, 4, -2}));
  EXPECT_EQ(keys[1], keys[0]);  // soft warm-up: the same legos every step, only the gates change
  ASSERT_EQ(keys[2].size(), 8u);
  EXPECT_EQ(keys[2][0], 0);
  EXPECT_EQ(keys[2][3], -1);
  EXPECT_EQ(keys[2][7], -1);
}

// A prepared layer with the table's values overwritten: its kernels read them (gates 0: y =
// relu(shortcut), the input gradient the shortcut's alone; probabilities 0: no router gradient), for
// exactly the prepared (task, step, training) only; other routes come without table views and give the
// host floats' results. `tasks` task-batched segments of one sample each: more than 16 make more parts
// than one fused pass takes (the gated copies instead).
void check_reads_the_table(Run run, int tasks = 1) {
  std::mt19937_64 ra(41), rb(41);
  RoutingOptions ro;
  ro.init_std = 1.0f;
  LegoLayer plain("l", small_spec(1, 4, 4), tasks + 1, ro, ra), tabled("l", small_spec(1, 4, 4), tasks + 1, ro, rb);
  for (LegoLayer* l : {&plain, &tabled}) l->set_strategy(make_per_lego_strategy());
  RunState rs;
  rs.task = run == Run::Batched ? -1 : 0;
  std::vector<int> prepared;
  for (int t = 0; t < tasks; ++t) {
    prepared.push_back(t);
    if (run == Run::Batched) rs.segments.push_back({t, tasks == 1 ? 3 : 1});
  }
  const Tensor x = test::random_tensor({tasks == 1 ? 3 : tasks, 4, 4, 4}, 42);
  RouteTable table;
  table.prepare({&tabled}, prepared, 5, true, Stream::host());
  Tensor values = table.table();
  std::fill(values.data_as<float>(), values.data_as<float>() + values.numel(), 0.0f);
  LegoLayer::Output out = tabled.forward(rs, x, 5);
  Tensor relu_x = Tensor::empty(x.shape(), DType::F32);
  kernels::relu_fwd(x, relu_x);
  EXPECT_TRUE(same_bits(out.y, relu_x));
  const Tensor dy = test::random_tensor(x.shape(), 43);
  Tensor da = Tensor::empty(x.shape(), DType::F32);
  kernels::relu_bwd(out.y, dy, da, kernels::GradMode::Overwrite);
  EXPECT_EQ(test::max_rel_error(tabled.backward(rs, dy, std::move(out.saved)), da), 0.0);
  for (int t = 0; t < tasks; ++t) EXPECT_EQ(tabled.router(t).grad.to_float_vector(), std::vector<float>(4, 0.0f));
  // Not prepared: the next step, inference, another task; a route after its logits changed.
  EXPECT_TRUE(tabled.route(0, 5, true).gate_values.defined());
  EXPECT_FALSE(tabled.route(0, 6, true).gate_values.defined());
  EXPECT_FALSE(tabled.route(0, 5, false).gate_values.defined());
  EXPECT_FALSE(tabled.route(tasks, 5, true).prob_values.defined());
  const LegoLayer::Output next = tabled.forward(rs, x, 6), want = plain.forward(rs, x, 6);
  EXPECT_TRUE(same_bits(next.y, want.y));
  EXPECT_FALSE(same_bits(next.y, relu_x));
  tabled.router(0).value.data_as<float>()[0] += 1.0f;
  tabled.set_router_copy(0, tabled.router(0).value.to_float_vector());
  EXPECT_FALSE(tabled.route(0, 5, true).gate_values.defined());
}

TEST(RouteTable, PerLegoReadsTheTableForItsStepOnly) { check_reads_the_table(Run::PerLego); }
TEST(RouteTable, TaskBatchedReadsTheTableForItsStepOnly) {
  check_reads_the_table(Run::Batched);
  check_reads_the_table(Run::Batched, 17);
}

// Backbone::prepare_routes: every routed layer of gppf-mini and gppf-vit, one slot per (layer, task)
// of its max entries and L probabilities, a key of every layer's routes, and the same table (the
// same address) step after step.
TEST(RouteTable, BackbonePreparesEveryRoutedLayer) {
  BackboneSpec vit = BackboneSpec::vit_mini();
  vit.vit->grid_h = vit.vit->grid_w = 2;
  vit.num_shared = 1;
  for (const BackboneSpec& spec : {BackboneSpec::mini(), vit}) {
    SCOPED_TRACE(spec.name);
    Backbone net(spec, 3, 7);
    EXPECT_FALSE(net.route_table().defined());
    const std::vector<int> key = net.prepare_routes({2, 0}, 4, true, Stream::host());
    const std::vector<RoutedLayer*> layers = net.routed_layers();
    ASSERT_FALSE(layers.empty());
    const std::int64_t slot = spec.num_legos + spec.num_shared + spec.num_legos;
    EXPECT_EQ(net.route_table().numel(), static_cast<std::int64_t>(layers.size()) * 3 * slot);
    std::vector<int> want;
    for (RoutedLayer* l : layers)
      for (int t : {2, 0}) {
        const Route r = l->route(t, 4, true);
        ASSERT_TRUE(r.gate_values.defined()) << l->name();
        EXPECT_EQ(r.gate_values.to_float_vector(), r.gates);
        EXPECT_EQ(r.prob_values.to_float_vector(), r.probs);
        want.insert(want.end(), r.legos.begin(), r.legos.end());
        want.push_back(-1);
      }
    EXPECT_EQ(key, want);
    EXPECT_FALSE(layers[0]->route(1, 4, true).gate_values.defined());
    const void* at = net.route_table().data();
    net.prepare_routes({1}, 5, true, Stream::host());
    EXPECT_EQ(net.route_table().data(), at);
    EXPECT_FALSE(layers[0]->route(2, 4, true).gate_values.defined());  // the last call's tasks only
    EXPECT_TRUE(layers[0]->route(1, 5, true).gate_values.defined());
  }
}

}  // namespace
}  // namespace gppf::nn
