#include "src/optim/optimizer.hpp"

#include <cmath>
#include <set>

#include "core/log.hpp"
#include "kernels/optim.hpp"

namespace gppf::optim {

void validate(const OptimizerConfig& c) {
  GPPF_CHECK(c.type == "sgd" || c.type == "adamw" || c.type == "lars" || c.type == "lamb", "optimizer: unknown type '",
             c.type, "' (expected sgd, adamw, lars or lamb)");
  GPPF_CHECK(c.lr >= 0.0f && std::isfinite(c.lr), "optimizer: lr must be >= 0, got ", c.lr);
  GPPF_CHECK(c.momentum >= 0.0f && c.momentum < 1.0f, "optimizer: momentum must be in [0, 1), got ", c.momentum);
  GPPF_CHECK(!c.nesterov || c.momentum > 0.0f, "optimizer: nesterov needs momentum > 0");
  GPPF_CHECK(c.weight_decay >= 0.0f, "optimizer: weight_decay must be >= 0, got ", c.weight_decay);
  GPPF_CHECK(c.beta1 >= 0.0f && c.beta1 < 1.0f, "optimizer: beta1 must be in [0, 1), got ", c.beta1);
  GPPF_CHECK(c.beta2 >= 0.0f && c.beta2 < 1.0f, "optimizer: beta2 must be in [0, 1), got ", c.beta2);
  GPPF_CHECK(c.eps > 0.0f, "optimizer: eps must be > 0, got ", c.eps);
  GPPF_CHECK(c.trust_coefficient > 0.0f, "optimizer: trust_coefficient must be > 0, got ", c.trust_coefficient);
  GPPF_CHECK(c.max_grad_norm >= 0.0f, "optimizer: max_grad_norm must be >= 0 (0: off), got ", c.max_grad_norm);
}

double lars_trust_ratio(double param_norm, double grad_norm, double eta, double weight_decay) {
  if (!(param_norm > 0.0) || !(grad_norm > 0.0)) return 1.0;
  return eta * param_norm / (grad_norm + weight_decay * param_norm);
}

double lamb_trust_ratio(double param_norm, double update_norm) {
  if (!(param_norm > 0.0) || !(update_norm > 0.0)) return 1.0;
  return param_norm / update_norm;
}

Optimizer::Optimizer(const OptimizerConfig& config, std::vector<nn::Parameter*> params)
    : m_config(config), m_params(std::move(params)), m_working(m_params.size(), nullptr) {
  validate(config);
  std::set<std::string> names;
  for (const nn::Parameter* p : m_params) {
    GPPF_CHECK(p, "optimizer: null parameter");
    GPPF_CHECK(names.insert(p->name).second, "optimizer: parameter name '", p->name,
               "' appears twice (names key the optimizer state)");
    GPPF_CHECK(p->value.defined(), "optimizer: parameter '", p->name, "' has no value");
    check_dtype("optimizer", p->name.c_str(), p->value, DType::F32);
    GPPF_CHECK(p->value.device() == m_params[0]->value.device(), "optimizer: parameter '", p->name, "' is on ",
               p->value.device().str(), " but '", m_params[0]->name, "' is on ", m_params[0]->value.device().str(),
               "; one optimizer serves one device");
  }
}

Tensor Optimizer::zeros_like(std::size_t i) const {
  const Tensor& v = m_params[i]->value;
  return Tensor::zeros(v.shape(), DType::F32, v.device());
}

Tensor Optimizer::step_counter() { return Tensor::zeros({1}, DType::I64); }

void Optimizer::set_working_copy(const nn::Parameter& param, Tensor* copy) {
  for (std::size_t i = 0; i < m_params.size(); ++i) {
    if (m_params[i] != &param) continue;
    if (copy) {
      GPPF_CHECK(copy->dtype() == DType::BF16 || copy->dtype() == DType::F16, "set_working_copy: ", param.name,
                 ": working copy must be bf16 or f16, got ", copy->desc());
      check_shape("set_working_copy", param.name.c_str(), *copy, param.value.shape());
      check_same_device("set_working_copy", *copy, param.value);
    }
    m_working[i] = copy;
    return;
  }
  GPPF_THROW("set_working_copy: parameter '", param.name, "' is not managed by this optimizer");
}

float Optimizer::step(float lr, const Stream& stream) {
  GPPF_CHECK(lr >= 0.0f && std::isfinite(lr), "optimizer step: lr must be finite and >= 0, got ", lr);
  const std::vector<std::size_t> touched = touched_indices(m_params);
  for (std::size_t i : touched) {
    const nn::Parameter& p = *m_params[i];
    GPPF_CHECK(p.grad.defined(), "optimizer step: parameter '", p.name, "' is touched but has no gradient");
    check_dtype("optimizer step", p.name.c_str(), p.grad, DType::F32);
    check_shape("optimizer step", p.name.c_str(), p.grad, p.value.shape());
    check_same_device("optimizer step", p.grad, p.value);
  }
  auto clear = [&] {
    for (nn::Parameter* p : m_params) p->clear_grad();
  };
  m_last_skipped = false;
  if (touched.empty() && !m_norm_reducer) {
    clear();
    return 0.0f;
  }

  // The norm pass: one reduction per tensor, one sync, a fixed summation order.
  const bool param_norms = wants_param_norms();
  static const std::vector<double> no_sums;
  if (!touched.empty()) {
    m_sums.reset(m_params[touched[0]]->value.device(), touched.size());
    std::vector<kernels::SumSquares> jobs;
    for (std::size_t k = 0; k < touched.size(); ++k) {
      const nn::Parameter& p = *m_params[touched[k]];
      jobs.push_back({&p.grad, param_norms ? &p.value : nullptr, m_sums.slot(k)});
    }
    kernels::sum_squares(jobs, stream);
  }
  const std::vector<double>& sums = touched.empty() ? no_sums : m_sums.fetch(stream);
  double total = 0.0;
  if (m_norm_reducer)
    total = m_norm_reducer(touched, sums);
  else
    for (std::size_t k = 0; k < touched.size(); ++k) total += sums[2 * k];
  if (touched.empty()) {
    clear();
    return static_cast<float>(std::sqrt(total));
  }
  const double unscale = m_scaler ? 1.0 / m_scaler->scale() : 1.0;
  const double norm = std::sqrt(total) * unscale;

  if (!std::isfinite(norm)) {
    m_last_skipped = true;
    if (m_scaler)
      m_scaler->update(true);
    else
      log::warn("optimizer: non-finite gradient norm (", norm, "); step skipped");
    clear();
    return static_cast<float>(norm);
  }
  if (m_scaler) m_scaler->update(false);

  const float grad_scale = static_cast<float>(unscale * clip_factor(norm, m_config.max_grad_norm));
  update(StepContext{lr, grad_scale, touched, sums, stream});
  for (std::size_t i : touched)
    if (m_working[i]) write_working_copy(*m_params[i], *m_working[i], stream);
  clear();
  return static_cast<float>(norm);
}

namespace {

std::int64_t& counter(Tensor& t) { return t.data_as<std::int64_t>()[0]; }

// SGD and LARS share their state: one momentum buffer per trainable parameter (none when momentum is 0).
class MomentumBase : public Optimizer {
 public:
  MomentumBase(const OptimizerConfig& c, std::vector<nn::Parameter*> params) : Optimizer(c, std::move(params)) {
    m_momentum.resize(m_params.size());
    if (c.momentum > 0.0f)
      for (std::size_t i = 0; i < m_params.size(); ++i)
        if (m_params[i]->trainable) m_momentum[i] = zeros_like(i);
  }

  std::vector<std::pair<std::string, Tensor*>> state() override {
    std::vector<std::pair<std::string, Tensor*>> out;
    for (std::size_t i = 0; i < m_params.size(); ++i)
      if (m_momentum[i].defined()) out.emplace_back(m_params[i]->name + ".momentum", &m_momentum[i]);
    return out;
  }

 protected:
  Tensor* momentum(std::size_t i) { return m_momentum[i].defined() ? &m_momentum[i] : nullptr; }

 private:
  std::vector<Tensor> m_momentum;
};

class Sgd final : public MomentumBase {
 public:
  using MomentumBase::MomentumBase;

 protected:
  void update(const StepContext& ctx) override {
    std::vector<kernels::SgdUpdate> jobs;
    for (std::size_t i : ctx.touched) {
      nn::Parameter& p = *m_params[i];
      const kernels::SgdParams sp{ctx.lr, m_config.momentum, p.decay ? m_config.weight_decay : 0.0f, ctx.grad_scale,
                                  m_config.nesterov};
      jobs.push_back({sp, &p.value, &p.grad, momentum(i)});
    }
    kernels::sgd_update(jobs, ctx.stream);
  }
};

class Lars final : public MomentumBase {
 public:
  using MomentumBase::MomentumBase;

 protected:
  bool wants_param_norms() const override { return true; }

  void update(const StepContext& ctx) override {
    std::vector<kernels::LarsUpdate> jobs;
    for (std::size_t k = 0; k < ctx.touched.size(); ++k) {
      const std::size_t i = ctx.touched[k];
      nn::Parameter& p = *m_params[i];
      // No-decay tensors (biases, BN affine) get neither decay nor trust-ratio adaptation.
      const float wd = p.decay ? m_config.weight_decay : 0.0f;
      const double trust =
          p.decay ? lars_trust_ratio(std::sqrt(ctx.sums[2 * k + 1]), std::sqrt(ctx.sums[2 * k]) * ctx.grad_scale,
                                     m_config.trust_coefficient, wd)
                  : 1.0;
      const kernels::LarsParams lp{ctx.lr,         m_config.momentum, wd, static_cast<float>(trust),
                                   ctx.grad_scale, m_config.nesterov};
      jobs.push_back({lp, &p.value, &p.grad, momentum(i)});
    }
    kernels::lars_update(jobs, ctx.stream);
  }
};

// AdamW and LAMB share their state: two moments and a step count per parameter.
class AdamBase : public Optimizer {
 public:
  AdamBase(const OptimizerConfig& c, std::vector<nn::Parameter*> params) : Optimizer(c, std::move(params)) {
    m_exp_avg.resize(m_params.size());
    m_exp_avg_sq.resize(m_params.size());
    m_step.resize(m_params.size());
    for (std::size_t i = 0; i < m_params.size(); ++i) {
      if (!m_params[i]->trainable) continue;
      m_exp_avg[i] = zeros_like(i);
      m_exp_avg_sq[i] = zeros_like(i);
      m_step[i] = step_counter();
    }
  }

  std::vector<std::pair<std::string, Tensor*>> state() override {
    std::vector<std::pair<std::string, Tensor*>> out;
    for (std::size_t i = 0; i < m_params.size(); ++i) {
      if (!m_exp_avg[i].defined()) continue;
      out.emplace_back(m_params[i]->name + ".exp_avg", &m_exp_avg[i]);
      out.emplace_back(m_params[i]->name + ".exp_avg_sq", &m_exp_avg_sq[i]);
      out.emplace_back(m_params[i]->name + ".step", &m_step[i]);
    }
    return out;
  }

 protected:
  // Advances parameter i's step count and returns the new one.
  std::int64_t advance(std::size_t i) {
    check_dtype("optimizer state", (m_params[i]->name + ".step").c_str(), m_step[i], DType::I64);
    GPPF_CHECK(m_step[i].device().is_host() && m_step[i].numel() == 1, "optimizer state: ", m_params[i]->name,
               ".step must be a host i64[1], got ", m_step[i].desc());
    return ++counter(m_step[i]);
  }

  std::vector<Tensor> m_exp_avg, m_exp_avg_sq, m_step;
};

class AdamW final : public AdamBase {
 public:
  using AdamBase::AdamBase;

 protected:
  void update(const StepContext& ctx) override {
    std::vector<kernels::AdamWUpdate> jobs;
    for (std::size_t i : ctx.touched) {
      nn::Parameter& p = *m_params[i];
      const kernels::AdamWParams ap{
          ctx.lr,         m_config.beta1, m_config.beta2, m_config.eps, p.decay ? m_config.weight_decay : 0.0f,
          ctx.grad_scale, advance(i)};
      jobs.push_back({ap, &p.value, &p.grad, &m_exp_avg[i], &m_exp_avg_sq[i]});
    }
    kernels::adamw_update(jobs, ctx.stream);
  }
};

class Lamb final : public AdamBase {
 public:
  using AdamBase::AdamBase;

 protected:
  void update(const StepContext& ctx) override {
    // Pass 1 (moments, |p|^2, |r|^2) for every tensor, one sync, then pass 2 with the trust ratios.
    std::vector<kernels::LambMoments> moments;
    m_norms.reset(m_params[ctx.touched[0]]->value.device(), ctx.touched.size());
    for (std::size_t k = 0; k < ctx.touched.size(); ++k) {
      const std::size_t i = ctx.touched[k];
      nn::Parameter& p = *m_params[i];
      const kernels::LambParams lp{m_config.beta1, m_config.beta2, m_config.eps, p.decay ? m_config.weight_decay : 0.0f,
                                   ctx.grad_scale, advance(i)};
      moments.push_back({lp, &p.value, &p.grad, &m_exp_avg[i], &m_exp_avg_sq[i], m_norms.slot(k)});
    }
    kernels::lamb_moments(moments, ctx.stream);
    const std::vector<double>& norms = m_norms.fetch(ctx.stream);
    std::vector<kernels::LambApply> applies;
    for (std::size_t k = 0; k < ctx.touched.size(); ++k) {
      const std::size_t i = ctx.touched[k];
      nn::Parameter& p = *m_params[i];
      // No-decay tensors (biases, BN affine) get no trust-ratio adaptation: plain Adam steps.
      const double trust = p.decay ? lamb_trust_ratio(std::sqrt(norms[2 * k]), std::sqrt(norms[2 * k + 1])) : 1.0;
      applies.push_back(
          {moments[k].params, static_cast<float>(ctx.lr * trust), &p.value, &m_exp_avg[i], &m_exp_avg_sq[i]});
    }
    kernels::lamb_apply(applies, ctx.stream);
  }

 private:
  SumBuffer m_norms;
};

}  // namespace

std::unique_ptr<Optimizer> Optimizer::create(const OptimizerConfig& config, std::vector<nn::Parameter*> params) {
  validate(config);
  if (config.type == "sgd") return std::make_unique<Sgd>(config, std::move(params));
  if (config.type == "adamw") return std::make_unique<AdamW>(config, std::move(params));
  if (config.type == "lars") return std::make_unique<Lars>(config, std::move(params));
  return std::make_unique<Lamb>(config, std::move(params));
}

}  // namespace gppf::optim
