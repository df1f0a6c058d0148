// Every optimizer against a hand-written double-precision reference over several steps, with a
// parameter skipped (touched == false) on some steps, a no-decay group and clipping on and off.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "src/optim/optimizer.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using optim::OptimizerConfig;

// ---- the reference: docs/OPTIMIZATION.md written out in double ------------------------------------
struct RefParam {
  std::vector<double> p, m, v;
  std::int64_t step = 0;
  bool decay = true;
};

double sq_norm(const std::vector<double>& x) {
  double s = 0.0;
  for (double e : x) s += e * e;
  return s;
}

// One step; grads[i] is ignored when !touched[i]. Returns the (unscaled, pre-clip) global norm.
double reference_step(const OptimizerConfig& c, double lr, std::vector<RefParam>& ps,
                      const std::vector<std::vector<double>>& grads, const std::vector<bool>& touched,
                      double loss_scale = 1.0) {
  double total = 0.0;
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (touched[i]) total += sq_norm(grads[i]);
  const double norm = std::sqrt(total) / loss_scale;
  if (!std::isfinite(norm)) return norm;
  const double clip = c.max_grad_norm > 0 && norm > c.max_grad_norm ? c.max_grad_norm / (norm + 1e-6) : 1.0;
  const double gs = clip / loss_scale;
  const double mu = c.momentum, b1 = c.beta1, b2 = c.beta2, eps = c.eps;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    if (!touched[i]) continue;
    RefParam& r = ps[i];
    const std::size_t n = r.p.size();
    const double wd = r.decay ? c.weight_decay : 0.0;
    std::vector<double> g(n);
    for (std::size_t j = 0; j < n; ++j) g[j] = grads[i][j] * gs;
    if (c.type == "sgd") {
      for (std::size_t j = 0; j < n; ++j) {
        double d = g[j];
        if (mu > 0) {
          r.m[j] = mu * r.m[j] + g[j];
          d = c.nesterov ? g[j] + mu * r.m[j] : r.m[j];
        }
        r.p[j] = r.p[j] * (1 - lr * wd) - lr * d;
      }
    } else if (c.type == "lars") {
      const double pn = std::sqrt(sq_norm(r.p)), gn = std::sqrt(sq_norm(g));
      const double trust = r.decay && pn > 0 && gn > 0 ? c.trust_coefficient * pn / (gn + wd * pn) : 1.0;
      for (std::size_t j = 0; j < n; ++j) {
        const double u = trust * (g[j] + wd * r.p[j]);
        double d = u;
        if (mu > 0) {
          r.m[j] = mu * r.m[j] + u;
          d = c.nesterov ? u + mu * r.m[j] : r.m[j];
        }
        r.p[j] -= lr * d;
      }
    } else {  // adamw, lamb
      const std::int64_t t = ++r.step;
      const double bc1 = 1 - std::pow(b1, static_cast<double>(t)), bc2 = 1 - std::pow(b2, static_cast<double>(t));
      std::vector<double> upd(n);
      for (std::size_t j = 0; j < n; ++j) {
        r.m[j] = b1 * r.m[j] + (1 - b1) * g[j];
        r.v[j] = b2 * r.v[j] + (1 - b2) * g[j] * g[j];
        upd[j] = (r.m[j] / bc1) / (std::sqrt(r.v[j] / bc2) + eps);
      }
      if (c.type == "adamw") {
        for (std::size_t j = 0; j < n; ++j) r.p[j] = r.p[j] * (1 - lr * wd) - lr * upd[j];
      } else {
        for (std::size_t j = 0; j < n; ++j) upd[j] += wd * r.p[j];
        const double pn = std::sqrt(sq_norm(r.p)), un = std::sqrt(sq_norm(upd));
        const double trust = r.decay && pn > 0 && un > 0 ? pn / un : 1.0;
        for (std::size_t j = 0; j < n; ++j) r.p[j] -= lr * trust * upd[j];
      }
    }
  }
  return norm;
}

// ---- the fixture: four parameters of odd sizes, one large enough for several reduction chunks -----
struct Model {
  std::vector<nn::Parameter> params;
  std::vector<RefParam> ref;
  std::vector<nn::Parameter*> ptrs() {
    std::vector<nn::Parameter*> out;
    for (auto& p : params) out.push_back(&p);
    return out;
  }
};

Model make_model(std::uint64_t seed) {
  const std::vector<Shape> shapes = {{7, 5}, {5}, {3, 3, 11}, {129, 131}};
  const std::vector<bool> decay = {true, false, true, true};
  Model m;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    nn::Parameter p;
    p.name = "layer" + std::to_string(i) + (decay[i] ? ".weight" : ".bias");
    p.value = test::random_tensor(shapes[i], seed + i, -1.0, 1.0);
    p.grad = Tensor::zeros(shapes[i], DType::F32);
    p.decay = decay[i];
    RefParam r;
    r.p = test::to_double(p.value);
    r.m.assign(r.p.size(), 0.0);
    r.v.assign(r.p.size(), 0.0);
    r.decay = decay[i];
    m.params.push_back(std::move(p));
    m.ref.push_back(std::move(r));
  }
  return m;
}

struct Case {
  std::string name;
  OptimizerConfig config;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  auto add = [&](const std::string& name, OptimizerConfig c) { out.push_back({name, c}); };
  OptimizerConfig sgd;
  sgd.weight_decay = 0.05f;
  add("sgd", sgd);
  sgd.nesterov = true;
  add("sgd_nesterov", sgd);
  sgd.nesterov = false;
  sgd.momentum = 0.0f;
  add("sgd_plain", sgd);
  OptimizerConfig adamw;
  adamw.type = "adamw";
  adamw.weight_decay = 0.1f;
  add("adamw", adamw);
  OptimizerConfig lars;
  lars.type = "lars";
  lars.weight_decay = 0.01f;
  lars.trust_coefficient = 0.02f;
  add("lars", lars);
  lars.nesterov = true;
  add("lars_nesterov", lars);
  OptimizerConfig lamb;
  lamb.type = "lamb";
  lamb.weight_decay = 0.05f;
  lamb.eps = 1e-6f;
  add("lamb", lamb);
  return out;
}

void expect_state_matches(optim::Optimizer& opt, const Model& m, const std::string& type, const std::string& where) {
  for (auto& [name, t] : opt.state()) {
    const auto dot = name.rfind('.');
    const std::string pname = name.substr(0, dot), what = name.substr(dot + 1);
    std::size_t i = 0;
    while (m.params[i].name != pname) ++i;
    const RefParam& r = m.ref[i];
    if (what == "step") {
      EXPECT_EQ(t->data_as<std::int64_t>()[0], r.step) << where << " " << name;
    } else {
      const auto& ref = what == "exp_avg_sq" ? r.v : r.m;
      EXPECT_LT(test::max_rel_error(*t, ref), 2e-5) << where << " " << name << " (" << type << ")";
    }
  }
}

void run_against_reference(const Case& tc, bool clip) {
  Model m = make_model(11);
  OptimizerConfig c = tc.config;
  c.max_grad_norm = clip ? 10.0f : 0.0f;
  auto opt = optim::Optimizer::create(c, m.ptrs());
  const std::vector<float> lrs = {0.1f, 0.05f, 0.2f, 0.1f, 0.02f, 0.1f};
  for (std::size_t s = 0; s < lrs.size(); ++s) {
    const std::string where = tc.name + (clip ? " clipped" : "") + " step " + std::to_string(s);
    std::vector<std::vector<double>> grads;
    std::vector<bool> touched;
    for (std::size_t i = 0; i < m.params.size(); ++i) {
      nn::Parameter& p = m.params[i];
      // layer2 sits out steps 1 and 3; its gradient buffer holds garbage then, which must not matter.
      const bool use = !(i == 2 && (s == 1 || s == 3));
      Tensor g = test::random_tensor(p.value.shape(), 100 * s + i, -1.0, 1.0);
      p.grad.copy_from(g);
      p.touched = use;
      if (!use) p.grad.fill_(1e30f);
      grads.push_back(test::to_double(g));
      touched.push_back(use);
    }
    const std::vector<float> before = m.params[2].value.to_float_vector();
    const double ref_norm = reference_step(c, lrs[s], m.ref, grads, touched);
    if (clip) {
      ASSERT_GT(ref_norm, c.max_grad_norm) << "the clipping case must clip";
    }
    const float norm = opt->step(lrs[s]);
    EXPECT_NEAR(norm, ref_norm, 1e-5 * ref_norm) << where;
    EXPECT_FALSE(opt->last_step_skipped());
    for (std::size_t i = 0; i < m.params.size(); ++i) {
      EXPECT_FALSE(m.params[i].touched) << where << ": clear_grad not called";
      EXPECT_LT(test::max_rel_error(m.params[i].value, m.ref[i].p), 1e-5) << where << " " << m.params[i].name;
    }
    if (!touched[2]) {
      const std::vector<float> after = m.params[2].value.to_float_vector();
      EXPECT_EQ(std::memcmp(before.data(), after.data(), before.size() * sizeof(float)), 0)
          << where << ": an untouched parameter changed";
    }
    expect_state_matches(*opt, m, c.type, where);
  }
}

class OptimizerVsReference : public ::testing::TestWithParam<std::size_t> {};

TEST_P(OptimizerVsReference, SixSteps) { run_against_reference(cases()[GetParam()], false); }
TEST_P(OptimizerVsReference, SixStepsClipped) { run_against_reference(cases()[GetParam()], true); }

INSTANTIATE_TEST_SUITE_P(All, OptimizerVsReference, ::testing::Range<std::size_t>(0, cases().size()),
                         [](const auto& param_info) { return cases()[param_info.param].name; });

TEST(Optimizer, StateNamesAndRestoreGiveIdenticalSteps) {
  for (const Case& tc : cases()) {
    Model a = make_model(3), b = make_model(3);
    auto oa = optim::Optimizer::create(tc.config, a.ptrs());
    auto drive = [](Model& m, optim::Optimizer& o, std::size_t s) {
      for (std::size_t i = 0; i < m.params.size(); ++i) {
        m.params[i].grad.copy_from(test::random_tensor(m.params[i].value.shape(), 7 * s + i));
        m.params[i].touched = true;
      }
      o.step(0.05f);
    };
    for (std::size_t s = 0; s < 3; ++s) drive(a, *oa, s);
    // A fresh optimizer over b, loaded with a's values and state, must continue exactly as a does.
    auto ob = optim::Optimizer::create(tc.config, b.ptrs());
    for (std::size_t i = 0; i < a.params.size(); ++i) b.params[i].value.copy_from(a.params[i].value);
    auto sa = oa->state(), sb = ob->state();
    ASSERT_EQ(sa.size(), sb.size()) << tc.name;
    ASSERT_FALSE(sa.empty() && tc.config.momentum > 0) << tc.name;
    for (std::size_t k = 0; k < sa.size(); ++k) {
      ASSERT_EQ(sa[k].first, sb[k].first);
      sb[k].second->copy_from(*sa[k].second);
    }
    if (tc.config.type == "adamw") {
      EXPECT_EQ(sa[2].first, "layer0.weight.step");
    }
    if (tc.config.type == "sgd" && tc.config.momentum > 0) {
      EXPECT_EQ(sa[1].first, "layer1.bias.momentum");
    }
    for (std::size_t s = 3; s < 5; ++s) {
      drive(a, *oa, s);
      drive(b, *ob, s);
    }
    for (std::size_t i = 0; i < a.params.size(); ++i)
      EXPECT_EQ(test::max_rel_error(a.params[i].value, b.params[i].value), 0.0) << tc.name;
  }
}

TEST(Optimizer, FrozenParameterIsNeverUpdatedButIsCleared) {
  Model m = make_model(5);
  m.params[0].trainable = false;
  OptimizerConfig c;
  c.type = "adamw";
  auto opt = optim::Optimizer::create(c, m.ptrs());
  const auto before = m.params[0].value.to_float_vector();
  for (auto& p : m.params) {
    p.grad.fill_(0.5f);
    p.touched = true;
  }
  opt->step(0.1f);
  EXPECT_EQ(m.params[0].value.to_float_vector(), before);
  EXPECT_FALSE(m.params[0].touched);
  EXPECT_EQ(opt->state().size(), 3u * (m.params.size() - 1));
}

TEST(Optimizer, NothingTouchedIsANoOp) {
  Model m = make_model(6);
  auto opt = optim::Optimizer::create({}, m.ptrs());
  const auto before = m.params[3].value.to_float_vector();
  EXPECT_EQ(opt->step(0.1f), 0.0f);
  EXPECT_EQ(m.params[3].value.to_float_vector(), before);
}

TEST(Optimizer, BadConfigAndInputsThrowNamingTheProblem) {
  Model m = make_model(8);
  OptimizerConfig c;
  c.type = "adam";
  try {
    optim::Optimizer::create(c, m.ptrs());
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'adam'"), std::string::npos) << e.what();
  }
  c = {};
  c.beta2 = 1.0f;
  EXPECT_THROW(optim::Optimizer::create(c, m.ptrs()), Error);
  c = {};
  c.momentum = 0.0f;
  c.nesterov = true;
  EXPECT_THROW(optim::Optimizer::create(c, m.ptrs()), Error);

  auto dup = m.ptrs();
  dup.push_back(dup[0]);
  EXPECT_THROW(optim::Optimizer::create({}, dup), Error);

  auto opt = optim::Optimizer::create({}, m.ptrs());
  m.params[1].grad = Tensor::zeros({6}, DType::F32);
  m.params[1].touched = true;
  try {
    opt->step(0.1f);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer1.bias"), std::string::npos) << e.what();
  }
  EXPECT_THROW(opt->step(-1.0f), Error);
}

TEST(Optimizer, TrustRatioEdgeCases) {
  EXPECT_EQ(optim::lars_trust_ratio(0.0, 1.0, 0.001, 1e-4), 1.0);
  EXPECT_EQ(optim::lars_trust_ratio(2.0, 0.0, 0.001, 1e-4), 1.0);
  EXPECT_DOUBLE_EQ(optim::lars_trust_ratio(2.0, 1.0, 0.01, 0.5), 0.01 * 2.0 / 2.0);
  EXPECT_EQ(optim::lamb_trust_ratio(0.0, 3.0), 1.0);
  EXPECT_DOUBLE_EQ(optim::lamb_trust_ratio(3.0, 1.5), 2.0);
}

}  // namespace
}  // namespace gppf
