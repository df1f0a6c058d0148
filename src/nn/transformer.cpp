#include "src/nn/transformer.hpp"

#include "kernels/elementwise.hpp"
#include "kernels/heads.hpp"

namespace gppf::nn {
namespace {

// Tokens [N, T, D] as rows [N * T, D].
Tensor rows(const Tensor& x) { return x.reshape({-1, x.dim(-1)}); }

}  // namespace

LayerNorm::LayerNorm(std::string name, int dim, float eps) : m_name(std::move(name)) {
  m_params.eps = eps;
  m_gamma = make_parameter(m_name + ".gamma", constant({dim}, 1.0f), false);
  m_beta = make_parameter(m_name + ".beta", constant({dim}, 0.0f), false);
}

Tensor LayerNorm::forward(const RunState& rs, const Tensor& x) {
  const Tensor xr = rows(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor yr = rows(y);
  Tensor mean = Tensor::empty({xr.dim(0)}, DType::F32, x.device());
  Tensor invstd = Tensor::empty({xr.dim(0)}, DType::F32, x.device());
  kernels::layernorm_fwd(m_params, xr, m_gamma.value, m_beta.value, yr, mean, invstd, rs.stream);
  if (rs.training) {
    m_x = x;
    m_mean = mean;
    m_invstd = invstd;
  }
  return y;
}

Tensor LayerNorm::backward(const RunState& rs, const Tensor& dy) {
  GPPF_CHECK(m_x.defined(), m_name, ": backward without a training forward");
  Tensor dx = Tensor::empty(m_x.shape(), m_x.dtype(), m_x.device());
  Tensor dxr = rows(dx);
  const auto mode = m_gamma.take_grad_mode();
  m_beta.take_grad_mode();
  kernels::layernorm_bwd(rows(m_x), rows(dy), m_gamma.value, m_mean, m_invstd, dxr, m_gamma.grad, m_beta.grad, mode,
                         rs.stream);
  m_x = m_mean = m_invstd = Tensor();
  return dx;
}

void LayerNorm::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&m_gamma);
  out.push_back(&m_beta);
}

MlpLego::MlpLego(const std::string& name, int dim, int hidden, std::mt19937_64& rng)
    : m_fc1(name + ".fc1", dim, hidden, rng), m_fc2(name + ".fc2", hidden, dim, rng) {}

Tensor MlpLego::forward(const RunState& rs, const Tensor& x) {
  Tensor h = m_fc1.forward(rs, x);
  Tensor a = Tensor::empty(h.shape(), h.dtype(), h.device());
  kernels::gelu_fwd(h, a, rs.stream);
  if (rs.training) m_h = h;
  return m_fc2.forward(rs, a);
}

void MlpLego::backward(const RunState& rs, const Tensor& dy, Tensor& dx, kernels::GradMode dx_mode) {
  GPPF_CHECK(m_h.defined(), "MLP lego: backward without a training forward");
  Tensor da = Tensor::empty(m_h.shape(), dy.dtype(), dy.device());
  m_fc2.backward(rs, dy, &da, kernels::GradMode::Overwrite);
  Tensor dh = Tensor::empty(m_h.shape(), dy.dtype(), dy.device());
  kernels::gelu_bwd(m_h, da, dh, kernels::GradMode::Overwrite, rs.stream);
  m_fc1.backward(rs, dh, &dx, dx_mode);
  m_h = Tensor();
}

void MlpLego::restore_saved(Saved s) {
  m_fc1.restore_saved(std::move(s.fc1));
  m_h = std::move(s.h);
  m_fc2.restore_saved(std::move(s.fc2));
}

void MlpLego::collect_parameters(std::vector<Parameter*>& out) {
  m_fc1.collect_parameters(out);
  m_fc2.collect_parameters(out);
}

MlpLegoLayer::MlpLegoLayer(const std::string& name, const MlpLegoSpec& spec, int num_tasks,
                           const RoutingOptions& routing, std::mt19937_64& rng)
    : m_name(name),
      m_spec(spec),
      m_norm(name + ".norm", spec.dim),
      m_router(name, spec.num_legos, spec.top_k, spec.num_shared, num_tasks, routing) {
  GPPF_CHECK(spec.dim > 0 && spec.hidden > 0, name, ": dim ", spec.dim, " and hidden ", spec.hidden,
             " must be positive");
  GPPF_CHECK(spec.num_legos >= 1 && spec.top_k >= 1 && spec.top_k <= spec.num_legos && spec.num_shared >= 0, name,
             ": top_k ", spec.top_k, " must be in [1, num_legos = ", spec.num_legos, "]");
  for (int i = 0; i < spec.num_shared + spec.num_legos; ++i) {
    const std::string lego = i < spec.num_shared ? str(name, ".shared", i) : str(name, ".lego", i - spec.num_shared);
    m_legos.push_back(std::make_unique<MlpLego>(lego, spec.dim, spec.hidden, rng));
  }
}

void MlpLegoLayer::set_index(int index) {
  m_index = index;
  const int shared = m_spec.num_shared;
  for (int i = 0; i < static_cast<int>(m_legos.size()); ++i)
    set_owner(*m_legos[static_cast<std::size_t>(i)],
              i < shared ? Owner{Owner::Kind::Shared, index, i, -1} : Owner{Owner::Kind::Lego, index, i - shared, -1});
  set_owner(m_norm, Owner{Owner::Kind::Shared, index, -1, -1});
  m_router.tag_owners(index);
}

Tensor MlpLegoLayer::forward(const RunState& rs, const Tensor& x, std::int64_t step) {
  GPPF_CHECK(rs.segments.empty(), m_name, ": task-batched passes are not supported by MLP legos yet");
  GPPF_CHECK(x.defined() || m_runner, m_name, ": no input");
  if (m_runner) {
    if (!x.defined()) {
      m_runner->forward(*this, rs, Tensor(), step, m_run_saved);
      return Tensor();
    }
    GPPF_CHECK(x.ndim() == 3 && x.dim(2) == m_spec.dim, m_name, ": input expected [N, T, ", m_spec.dim, "], got ",
               x.desc());
    const Tensor sum = m_runner->forward(*this, rs, rows(m_norm.forward(rs, x)), step, m_run_saved);
    Tensor y = x.clone(rs.stream);
    Tensor yr = rows(y);
    kernels::axpby(1.0f, sum, 1.0f, yr, rs.stream);
    if (rs.training) m_x_shape = x.shape();
    return y;
  }
  GPPF_CHECK(x.ndim() == 3 && x.dim(2) == m_spec.dim, m_name, ": input expected [N, T, ", m_spec.dim, "], got ",
             x.desc());
  const Route r = m_router.route(rs.task, step, rs.training);
  const Tensor h = rows(m_norm.forward(rs, x));
  Tensor y = x.clone(rs.stream);
  Tensor yr = rows(y);
  std::vector<Tensor> outputs;
  for (std::size_t j = 0; j < r.legos.size(); ++j) {
    Tensor o = m_legos[static_cast<std::size_t>(r.legos[j])]->forward(rs, h);
    gated_axpby(r, j, o, 1.0f, yr, rs.stream);
    if (rs.training) outputs.push_back(std::move(o));
  }
  if (rs.training) {
    m_route = r;
    m_x_shape = x.shape();
    m_outputs = std::move(outputs);
  }
  return y;
}

Tensor MlpLegoLayer::backward(const RunState& rs, const Tensor& dy) {
  if (m_runner) {
    GPPF_CHECK(m_run_saved, m_name, ": backward without a training forward");
    const Tensor dh = m_runner->backward(*this, rs, dy.defined() ? rows(dy) : Tensor(), *m_run_saved);
    m_run_saved.reset();
    if (!dy.defined()) return Tensor();
    Tensor dx = m_norm.backward(rs, dh.reshape(m_x_shape));
    kernels::axpby(1.0f, dy, 1.0f, dx, rs.stream);  // the residual
    return dx;
  }
  GPPF_CHECK(!m_outputs.empty(), m_name, ": backward without a training forward");
  const Tensor dyr = rows(dy);
  const Route& r = m_route;
  Tensor dgate = Tensor::empty({static_cast<std::int64_t>(r.legos.size())}, DType::F32, dy.device());
  dgate.zero_(rs.stream);
  Tensor dh = Tensor::empty(dyr.shape(), dy.dtype(), dy.device());
  Tensor scaled = Tensor::empty(dyr.shape(), dy.dtype(), dy.device());
  // Each lego keeps its own last forward, and appears at most once in a route.
  for (std::size_t j = 0; j < r.legos.size(); ++j) {
    if (r.routed[j] >= 0) {
      Tensor slot = dgate.narrow0(static_cast<std::int64_t>(j), 1);
      kernels::dot(dyr, m_outputs[j], slot, kernels::GradMode::Overwrite, rs.stream);
    }
    gated_axpby(r, j, dyr, 0.0f, scaled, rs.stream);
    m_legos[static_cast<std::size_t>(r.legos[j])]->backward(
        rs, scaled, dh, j == 0 ? kernels::GradMode::Overwrite : kernels::GradMode::Accumulate);
  }
  m_router.accumulate_grad(rs.task, r, dgate, rs.stream);
  Tensor dx = m_norm.backward(rs, dh.reshape(m_x_shape));
  kernels::axpby(1.0f, dy, 1.0f, dx, rs.stream);  // the residual
  m_outputs.clear();
  return dx;
}

void MlpLegoLayer::collect_parameters(std::vector<Parameter*>& out) {
  m_norm.collect_parameters(out);
  for (auto& lego : m_legos) lego->collect_parameters(out);
  m_router.collect_parameters(out);
}

SelfAttention::SelfAttention(const std::string& name, int dim, int heads, std::mt19937_64& rng)
    : m_dim(dim),
      m_heads(heads),
      m_norm(name + ".norm", dim),
      m_qkv(name + ".qkv", dim, 3 * dim, rng),
      m_proj(name + ".proj", dim, dim, rng) {
  GPPF_CHECK(heads > 0 && dim % heads == 0, name, ": width ", dim, " does not divide into ", heads, " heads");
}

Tensor SelfAttention::forward(const RunState& rs, const Tensor& x) {
  GPPF_CHECK(x.ndim() == 3 && x.dim(2) == m_dim, "attention: input expected [N, T, ", m_dim, "], got ", x.desc());
  const std::int64_t N = x.dim(0), T = x.dim(1), Dh = m_dim / m_heads;
  const Tensor qkv = m_qkv.forward(rs, rows(m_norm.forward(rs, x))).reshape({N, T, 3 * m_dim});
  const Shape hs{N, m_heads, T, Dh};
  Tensor q = Tensor::empty(hs, x.dtype(), x.device()), k = Tensor::empty(hs, x.dtype(), x.device()),
         v = Tensor::empty(hs, x.dtype(), x.device());
  kernels::split_heads(qkv, m_heads, q, k, v, rs.stream);
  Tensor out = Tensor::empty(hs, x.dtype(), x.device());
  Tensor probs = Tensor::empty({N, m_heads, T, T}, x.dtype(), x.device());
  kernels::sdpa_fwd({}, q, k, v, out, probs, rs.stream);
  Tensor merged = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::merge_heads(out, merged, rs.stream);
  Tensor y = m_proj.forward(rs, rows(merged)).reshape(x.shape());
  kernels::axpby(1.0f, x, 1.0f, y, rs.stream);  // the residual
  if (rs.training) {
    m_q = q;
    m_k = k;
    m_v = v;
    m_probs = probs;
    m_x_shape = x.shape();
  }
  return y;
}

Tensor SelfAttention::backward(const RunState& rs, const Tensor& dy) {
  GPPF_CHECK(m_probs.defined(), "attention: backward without a training forward");
  const std::int64_t N = m_x_shape[0], T = m_x_shape[1];
  Tensor dmerged = Tensor::empty({N * T, m_dim}, dy.dtype(), dy.device());
  m_proj.backward(rs, rows(dy), &dmerged, kernels::GradMode::Overwrite);
  Tensor dout = Tensor::empty(m_q.shape(), dy.dtype(), dy.device());
  kernels::merge_heads_bwd(dmerged.reshape(m_x_shape), m_heads, dout, rs.stream);
  Tensor dq = Tensor::empty(m_q.shape(), dy.dtype(), dy.device()),
         dk = Tensor::empty(m_k.shape(), dy.dtype(), dy.device()),
         dv = Tensor::empty(m_v.shape(), dy.dtype(), dy.device());
  kernels::sdpa_bwd({}, m_q, m_k, m_v, m_probs, dout, dq, dk, dv, rs.stream);
  Tensor dqkv = Tensor::empty({N, T, 3 * m_dim}, dy.dtype(), dy.device());
  kernels::split_heads_bwd(dq, dk, dv, dqkv, rs.stream);
  Tensor dh = Tensor::empty({N * T, m_dim}, dy.dtype(), dy.device());
  m_qkv.backward(rs, rows(dqkv), &dh, kernels::GradMode::Overwrite);
  Tensor dx = m_norm.backward(rs, dh.reshape(m_x_shape));
  kernels::axpby(1.0f, dy, 1.0f, dx, rs.stream);  // the residual
  m_q = m_k = m_v = m_probs = Tensor();
  return dx;
}

void SelfAttention::collect_parameters(std::vector<Parameter*>& out) {
  m_norm.collect_parameters(out);
  m_qkv.collect_parameters(out);
  m_proj.collect_parameters(out);
}

TransformerBlock::TransformerBlock(const std::string& name, const MlpLegoSpec& mlp, int heads, int num_tasks,
                                   const RoutingOptions& routing, std::mt19937_64& rng)
    : m_attn(name + ".attn", mlp.dim, heads, rng), m_mlp(name + ".mlp", mlp, num_tasks, routing, rng) {}

Tensor TransformerBlock::forward(const RunState& rs, const Tensor& x, std::int64_t step) {
  if (!x.defined()) return m_mlp.forward(rs, x, step);
  return m_mlp.forward(rs, m_attn.forward(rs, x), step);
}

Tensor TransformerBlock::backward(const RunState& rs, const Tensor& dy) {
  if (!dy.defined()) return m_mlp.backward(rs, dy);
  return m_attn.backward(rs, m_mlp.backward(rs, dy));
}

void TransformerBlock::collect_parameters(std::vector<Parameter*>& out) {
  m_attn.collect_parameters(out);
  m_mlp.collect_parameters(out);
}

}  // namespace gppf::nn
