// GPPF-ViT's blocks (src/nn/transformer.hpp) and backbone (src/nn/vit.hpp): the gradients of the MLP
// lego layer, self-attention, a whole block and the backbone (inputs, weights, layer norm, router
// logits, position embeddings on and off their grid) against central differences of their float
// forward; the MLP legos' forward is the residual plus the gated active legos; legos no task chose
// stay untouched.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>

#include "src/nn/transformer.hpp"
#include "src/nn/vit.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf::nn {
namespace {

double weighted_sum(const Tensor& y, const Tensor& r) {
  const auto a = y.to_float_vector(), b = r.to_float_vector();
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

MlpLegoSpec small_mlp(int shared = 0) {
  MlpLegoSpec s;
  s.dim = 8;
  s.hidden = 6;
  s.num_legos = 3;
  s.top_k = 2;
  s.num_shared = shared;
  return s;
}

test::GradCheckOptions fd_options() {
  test::GradCheckOptions o;
  o.step = 1e-3;
  o.rtol = 3e-2;
  o.atol = 3e-3;
  o.max_checks = 30;
  return o;
}

// A module under test: runs its forward on `in` and the backward of `r` (so every module's saved
// state stays paired), returns the output and leaves the input gradient in *dx.
using ForwardBackward = std::function<Tensor(const Tensor& in, const Tensor& r)>;

// d sum(r * f(x)) / d x (unless dx is null: an image input) and / d each parameter, against central
// differences of the float forward. r has the output's shape.
void check_gradients(const ForwardBackward& fb, const Tensor& x, const Tensor* dx,
                     const std::vector<Parameter*>& params, const Shape& out_shape = {}) {
  const Tensor r = test::random_tensor(out_shape.empty() ? x.shape() : out_shape, 99);
  for (Parameter* p : params) p->clear_grad();
  fb(x, r);
  const Tensor dx0 = dx ? dx->clone() : Tensor();
  std::vector<Tensor> grads;
  for (Parameter* p : params) grads.push_back(p->grad.clone());
  auto check = [&](Tensor target, const Tensor& analytic, const std::string& what) {
    const auto orig = test::to_double(target);
    auto loss = [&](const std::vector<double>& v) {
      for (std::size_t i = 0; i < v.size(); ++i) target.data_as<float>()[i] = static_cast<float>(v[i]);
      return weighted_sum(fb(x, r), r);
    };
    const auto res = test::check_gradient(loss, orig, test::to_double(analytic), fd_options());
    EXPECT_TRUE(res.ok) << what << ": " << res.message();
    loss(orig);
  };
  if (dx) check(x, dx0, "input");
  for (std::size_t i = 0; i < params.size(); ++i) check(params[i]->value, grads[i], params[i]->name);
}

std::vector<Parameter*> named(Module& m, const std::vector<std::string>& names) {
  std::vector<Parameter*> all, out;
  m.collect_parameters(all);
  for (const std::string& n : names)
    for (Parameter* p : all)
      if (p->name == n) out.push_back(p);
  EXPECT_EQ(out.size(), names.size());
  return out;
}

TEST(MlpLegoLayer, ForwardIsTheResidualPlusGatedActiveLegos) {
  std::mt19937_64 rng(3);
  MlpLegoLayer layer("m", small_mlp(), 2, RoutingOptions{}, rng);
  RunState rs;
  rs.task = 1;
  rs.training = false;
  const Tensor x = test::random_tensor({2, 5, 8}, 4);
  const Tensor y = layer.forward(rs, x, 100);
  const Route r = layer.route(1, 100, false);
  ASSERT_EQ(r.legos.size(), 2u);
  // The same by hand: LN (gamma 1, beta 0, eps 1e-6) and the two legos on the rows.
  LayerNorm norm("n", 8);
  const Tensor h = norm.forward(rs, x).reshape({10, 8});
  std::vector<float> want = x.to_float_vector();
  for (std::size_t j = 0; j < r.legos.size(); ++j) {
    const auto o = layer.lego(r.legos[j]).forward(rs, h).to_float_vector();
    for (std::size_t i = 0; i < want.size(); ++i) want[i] += r.gates[j] * o[i];
  }
  const auto got = y.to_float_vector();
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
}

TEST(MlpLegoLayer, GradientsOfInputWeightsNormAndRouter) {
  for (int shared : {0, 1}) {
    std::mt19937_64 rng(5);
    MlpLegoLayer layer("m", small_mlp(shared), 2, RoutingOptions{}, rng);
    RunState rs;
    Tensor x = test::random_tensor({2, 3, 8}, 6).clone(), dx;
    auto fb = [&](const Tensor& in, const Tensor& r) {
      Tensor y = layer.forward(rs, in, 100);
      dx = layer.backward(rs, r);
      return y;
    };
    const Route route = layer.route(0, 100, true);
    std::vector<std::string> names = {str("m.lego", route.legos.back() - shared, ".fc1.weight"), "m.norm.gamma",
                                      "m.router.task0"};
    if (shared) names.push_back("m.shared0.fc2.weight");
    check_gradients(fb, x, &dx, named(layer, names));
  }
}

TEST(MlpLegoLayer, LegosNoTaskChoseAreUntouched) {
  std::mt19937_64 rng(5);
  MlpLegoLayer layer("m", small_mlp(), 1, RoutingOptions{}, rng);
  RunState rs;
  const Tensor x = test::random_tensor({2, 3, 8}, 6);
  layer.forward(rs, x, 100);
  layer.backward(rs, test::random_tensor(x.shape(), 7));
  const Route route = layer.route(0, 100, true);
  std::vector<Parameter*> all;
  layer.collect_parameters(all);
  int untouched = 0;
  for (Parameter* p : all) {
    bool active = p->name.find(".lego") == std::string::npos;
    for (int i : route.legos) active = active || p->name.find(str(".lego", i, ".")) != std::string::npos;
    EXPECT_EQ(p->touched, active) << p->name;
    untouched += !active;
  }
  EXPECT_EQ(untouched, 4);  // fc1 and fc2 weight and bias of the one lego left out
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.defined() == b.defined() && a.numel() == b.numel() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// The routes prepared in a RouteTable (Backbone::prepare_routes), whose gates and probabilities the
// kernels then read from the table: the same bits as the host floats for the output and the input,
// weight, norm and router gradients, with and without a shared lego and in the soft warm-up.
TEST(MlpLegoLayer, RouteTableIsBitForBitTheHostFloats) {
  for (int shared : {0, 1}) {
    SCOPED_TRACE(str("shared ", shared));
    RoutingOptions ro;
    ro.warmup = RoutingOptions::Warmup::Soft;
    ro.warmup_steps = 1;
    ro.init_std = 1.0f;
    std::mt19937_64 ra(8), rb(8);
    MlpLegoLayer plain("m", small_mlp(shared), 2, ro, ra), tabled("m", small_mlp(shared), 2, ro, rb);
    std::vector<Parameter*> pp, pt;
    plain.collect_parameters(pp);
    tabled.collect_parameters(pt);
    RouteTable table;
    for (std::int64_t step = 0; step < 3; ++step) {
      SCOPED_TRACE(str("step ", step));
      for (Parameter* p : pp) p->clear_grad();
      for (Parameter* p : pt) p->clear_grad();
      table.prepare({&tabled}, {0, 1}, step, true, Stream::host());
      for (int task : {1, 0}) {
        RunState rs;
        rs.task = task;
        ASSERT_TRUE(tabled.route(task, step, true).gate_values.defined());
        const Tensor x = test::random_tensor({2, 3, 8}, 40 + static_cast<std::uint64_t>(step * 2 + task));
        EXPECT_TRUE(same_bits(plain.forward(rs, x, step), tabled.forward(rs, x, step))) << "y";
        const Tensor dy = test::random_tensor(x.shape(), 50 + static_cast<std::uint64_t>(task));
        EXPECT_TRUE(same_bits(plain.backward(rs, dy), tabled.backward(rs, dy))) << "dx";
      }
      for (std::size_t i = 0; i < pp.size(); ++i) {
        ASSERT_EQ(pp[i]->touched, pt[i]->touched) << pp[i]->name;
        if (pp[i]->touched) {
          EXPECT_TRUE(same_bits(pp[i]->grad, pt[i]->grad)) << pp[i]->name;
        }
      }
    }
  }
}

// With the prepared table's values zeroed, the layer's kernels read the zeros: the output is the
// residual alone and the router gets no gradient; the next step's route is computed on the spot.
TEST(MlpLegoLayer, ReadsTheRouteTableForItsStepOnly) {
  std::mt19937_64 ra(9), rb(9);
  MlpLegoLayer plain("m", small_mlp(), 1, RoutingOptions{}, ra), tabled("m", small_mlp(), 1, RoutingOptions{}, rb);
  RouteTable table;
  table.prepare({&tabled}, {0}, 3, true, Stream::host());
  Tensor values = table.table();
  std::fill(values.data_as<float>(), values.data_as<float>() + values.numel(), 0.0f);
  RunState rs;
  const Tensor x = test::random_tensor({2, 3, 8}, 10);
  EXPECT_TRUE(same_bits(tabled.forward(rs, x, 3), x));
  tabled.backward(rs, test::random_tensor(x.shape(), 11));
  EXPECT_EQ(tabled.router(0).grad.to_float_vector(), std::vector<float>(3, 0.0f));
  EXPECT_FALSE(tabled.route(0, 4, true).gate_values.defined());
  EXPECT_FALSE(tabled.route(0, 3, false).gate_values.defined());
  EXPECT_TRUE(same_bits(tabled.forward(rs, x, 4), plain.forward(rs, x, 4)));
}

TEST(SelfAttention, GradientsOfInputAndWeights) {
  std::mt19937_64 rng(8);
  SelfAttention attn("a", 8, 2, rng);
  RunState rs;
  Tensor x = test::random_tensor({2, 4, 8}, 9).clone(), dx;
  auto fb = [&](const Tensor& in, const Tensor& r) {
    Tensor y = attn.forward(rs, in);
    dx = attn.backward(rs, r);
    return y;
  };
  check_gradients(fb, x, &dx, named(attn, {"a.qkv.weight", "a.proj.weight", "a.norm.beta"}));
}

TEST(TransformerBlock, Gradients) {
  std::mt19937_64 rng(10);
  TransformerBlock block("b", small_mlp(), 2, 1, RoutingOptions{}, rng);
  RunState rs;
  Tensor x = test::random_tensor({2, 4, 8}, 11).clone(), dx;
  auto fb = [&](const Tensor& in, const Tensor& r) {
    Tensor y = block.forward(rs, in, 100);
    dx = block.backward(rs, r);
    return y;
  };
  check_gradients(fb, x, &dx, named(block, {"b.attn.qkv.weight", "b.mlp.router.task0"}));
}

VitSpec tiny_vit() {
  VitSpec v;
  v.patch = 4;
  v.dim = 8;
  v.depth = 2;
  v.heads = 2;
  v.mlp_hidden = 12;
  v.num_legos = 3;
  v.top_k = 2;
  v.grid_h = v.grid_w = 2;
  return v;
}

TEST(VitBackbone, TokenMapOfGreyAndColourImages) {
  VitBackbone vit(tiny_vit(), 2, 1);
  RunState rs;
  rs.training = false;
  for (int c : {1, 3}) {
    const std::vector<Tensor> y = vit.forward(rs, test::random_tensor({3, 8, 12, c}, 2), 0);
    ASSERT_EQ(y.size(), 1u);
    EXPECT_EQ(y[0].shape(), (Shape{3, 2, 3, 8})) << c;
  }
  EXPECT_EQ(vit.lego_layers().size(), 2u);
  EXPECT_NE(test::error_of([&] {
              vit.forward(rs, test::random_tensor({1, 6, 8, 1}, 2), 0);
            }).find("patch"),
            std::string::npos);
}

// On the pre-training grid and off it (the position embeddings interpolated), grey and colour.
TEST(VitBackbone, Gradients) {
  for (const Shape& image : {Shape{2, 8, 8, 1}, Shape{2, 12, 8, 3}}) {
    VitBackbone vit(tiny_vit(), 2, 3);
    RunState rs;
    rs.task = 1;
    Tensor x = test::random_tensor(image, 4).clone();
    auto fb = [&](const Tensor& in, const Tensor& r) {
      Tensor y = vit.forward(rs, in, 100).at(0);
      vit.backward(rs, r);
      return y;
    };
    const Shape out{image[0], image[1] / 4, image[2] / 4, 8};
    check_gradients(fb, x, nullptr,
                    named(vit, {"patch_embed.weight", "pos_embed", "block1.mlp.router.task1", "block0.attn.qkv.weight",
                                "norm.gamma"}),
                    out);
  }
}

// pool "token": a class token leads the sequence; its state is a second output. Gradients through
// either output alone (a classification head reads the token, a dense head the map), on and off the
// pre-training grid.
TEST(VitBackbone, ClassTokenGradients) {
  VitSpec spec = tiny_vit();
  spec.pool = "token";
  for (const Shape& image : {Shape{2, 8, 8, 1}, Shape{2, 12, 8, 3}})
    for (int read : {0, 1}) {
      VitBackbone vit(spec, 2, 3);
      // Unit scale: the token's first layer norm divides by its spread, which at the initial 0.02
      // makes central differences of step 1e-3 inaccurate.
      named(vit, {"cls_token"})[0]->value.copy_from(test::random_tensor({8}, 7));
      RunState rs;
      rs.task = 1;
      Tensor x = test::random_tensor(image, 4).clone();
      auto fb = [&](const Tensor& in, const Tensor& r) {
        std::vector<Tensor> y = vit.forward(rs, in, 100);
        EXPECT_EQ(y.size(), 2u);
        if (read == 0)
          vit.backward(rs, r, Tensor());
        else
          vit.backward(rs, Tensor(), r);
        return y.at(static_cast<std::size_t>(read));
      };
      const Shape out = read == 0 ? Shape{image[0], image[1] / 4, image[2] / 4, 8} : Shape{image[0], 1, 1, 8};
      SCOPED_TRACE(str("image ", image[1], "x", image[2], ", reading ", read == 0 ? "the map" : "the token"));
      check_gradients(fb, x, nullptr,
                      named(vit, {"cls_token", "patch_embed.weight", "pos_embed", "block1.mlp.router.task1",
                                  "block0.attn.qkv.weight"}),
                      out);
    }
}

// The class token is its own parameter, drawn from its own generator: a network without it starts
// from the same values, and its token map differs only through attention to the token.
TEST(VitBackbone, ClassTokenLeavesTheOtherParametersAsTheyWere) {
  VitSpec with = tiny_vit();
  with.pool = "token";
  VitBackbone a(tiny_vit(), 1, 5), b(with, 1, 5);
  std::vector<Parameter*> pa, pb;
  a.collect_parameters(pa);
  b.collect_parameters(pb);
  ASSERT_EQ(pb.size(), pa.size() + 1);
  std::size_t j = 0;
  for (Parameter* p : pb) {
    if (p->name == "cls_token") {
      EXPECT_EQ(p->value.shape(), (Shape{8}));
      continue;
    }
    EXPECT_EQ(p->name, pa[j]->name);
    EXPECT_EQ(test::to_double(p->value), test::to_double(pa[j]->value)) << p->name;
    ++j;
  }
  RunState rs;
  rs.training = false;
  const Tensor x = test::random_tensor({2, 8, 8, 1}, 6);
  const auto ya = a.forward(rs, x, 0), yb = b.forward(rs, x, 0);
  EXPECT_GT(test::max_rel_error(ya[0], yb[0]), 1e-4);
  EXPECT_LT(a.macs(x.shape(), 2), b.macs(x.shape(), 2));
  EXPECT_NE(test::error_of([&] { b.backward(rs, Tensor(), Tensor()); }).find("backward"), std::string::npos);
}

TEST(TransformerBlock, BadWidthNamesTheLayer) {
  std::mt19937_64 rng(1);
  EXPECT_NE(test::error_of([&] { SelfAttention("blk.attn", 10, 3, rng); }).find("blk.attn"), std::string::npos);
  MlpLegoSpec bad = small_mlp();
  bad.top_k = 5;
  EXPECT_NE(test::error_of([&] { MlpLegoLayer("blk.mlp", bad, 1, RoutingOptions{}, rng); }).find("blk.mlp"),
            std::string::npos);
}

}  // namespace
}  // namespace gppf::nn
