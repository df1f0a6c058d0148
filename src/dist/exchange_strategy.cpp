#include "src/dist/exchange_strategy.hpp"

#include <algorithm>

#include "kernels/elementwise.hpp"

namespace gppf::dist {
namespace {

using nn::Route;

// One round of one layer: the routes of every block member, and every lego call that a backward
// will need (this member's own and the ones it served), in call order.
struct ExchangeSaved final : nn::LegoContext {
  struct Call {
    int member = 0;
    std::size_t entry = 0;  // index into routes[member].legos
    nn::Bottleneck::Saved saved;
    Tensor out;
  };
  std::vector<Route> routes;
  std::vector<Call> calls;
  nn::ShortcutSaved shortcut;
  Tensor y;  // this member's output (undefined when it ran no task with a backward)
};

class ExchangeStrategy final : public nn::LegoStrategy {
 public:
  explicit ExchangeStrategy(LegoExchange& ex) : m_ex(ex) {}
  const char* name() const override { return "exchange"; }
  bool serves_without_input() const override { return true; }
  Tensor forward(nn::LegoLayer& layer, const nn::RunState& rs, const Tensor& x, std::int64_t step,
                 std::unique_ptr<nn::LegoContext>& saved) override;
  Tensor backward(nn::LegoLayer& layer, const nn::RunState& rs, const Tensor& dy, nn::LegoContext& saved) override;

 private:
  // Runs the lego calls of the round that this member holds, member by member (the same order on
  // every replica, which synchronised BN relies on); partial[p]: member p's gate-weighted sum.
  void run_calls(nn::LegoLayer& layer, const nn::RunState& rs, const Tensor& x, const LegoExchange::Dispatch& d,
                 ExchangeSaved& ctx, bool keep, Tensor& acc, std::vector<Tensor>& partial);

  LegoExchange& m_ex;
};

void ExchangeStrategy::run_calls(nn::LegoLayer& layer, const nn::RunState& rs, const Tensor& x,
                                 const LegoExchange::Dispatch& d, ExchangeSaved& ctx, bool keep, Tensor& acc,
                                 std::vector<Tensor>& partial) {
  const int P = m_ex.size(), me = m_ex.me();
  for (int p = 0; p < P; ++p) {
    const PeerWork& peer = m_ex.peer(p);
    if (peer.task < 0) continue;
    Tensor xin;
    Tensor* sum = nullptr;
    if (p == me) {
      xin = x;
      acc = nn::shortcut_forward(layer, rs, x, &ctx.shortcut);
      sum = &acc;
    } else {
      if (d.received[static_cast<std::size_t>(p)] == 0) continue;
      xin = d.part(p, m_ex.layer_input(p, layer.index()));
      sum = &partial[static_cast<std::size_t>(p)];
    }
    nn::RunState prs = rs;
    prs.task = peer.task;
    prs.training = peer.training;
    prs.bn_momentum = peer.bn_momentum;
    if (!peer.training) prs.bn_sync = nullptr;
    const Route& r = ctx.routes[static_cast<std::size_t>(p)];
    for (std::size_t j = 0; j < r.legos.size(); ++j) {
      if (m_ex.where(ctx.routes, p, j) != me) continue;
      nn::Bottleneck& lego = layer.lego(r.legos[j]);
      Tensor o = lego.forward(prs, xin);
      if (!sum->defined()) {
        *sum = Tensor::empty(o.shape(), o.dtype(), o.device());
        kernels::axpby(r.gates[j], o, 0.0f, *sum, rs.stream);
      } else {
        kernels::axpby(r.gates[j], o, 1.0f, *sum, rs.stream);
      }
      if (keep && peer.training && peer.backward) ctx.calls.push_back({p, j, lego.take_saved(), o});
    }
  }
}

Tensor ExchangeStrategy::forward(nn::LegoLayer& layer, const nn::RunState& rs, const Tensor& x, std::int64_t,
                                 std::unique_ptr<nn::LegoContext>& saved) {
  const int P = m_ex.size(), me = m_ex.me();
  const bool mine = m_ex.peer(me).task >= 0;
  if (mine)
    GPPF_CHECK(x.device() == m_ex.device() && x.dtype() == DType::F32, layer.name(),
               ": expert-parallel input expected f32 on ", m_ex.device().str(), " (precision: fp32), got ", x.desc());
  auto ctx = std::make_unique<ExchangeSaved>();
  ctx->routes = m_ex.round_routes(layer);
  // Dispatch: my input to every member holding some of my legos; the inputs of the members whose legos I hold.
  const LegoExchange::Dispatch d = m_ex.dispatch(
      ctx->routes, mine ? x : Tensor(), false, [&](int q) { return shape_numel(m_ex.layer_input(q, layer.index())); },
      layer.name() + " forward dispatch");
  Tensor acc;
  std::vector<Tensor> partial(static_cast<std::size_t>(P));
  const bool keep = m_ex.anyone_backward();
  run_calls(layer, rs, x, d, *ctx, keep, acc, partial);
  // Combine: the gate-weighted sums go back to the members they belong to.
  m_ex.combine_sums(d, partial, acc, rs.stream, layer.name() + " forward combine");
  Tensor y;
  if (mine) {
    y = Tensor::empty(acc.shape(), acc.dtype(), acc.device());
    kernels::relu_fwd(acc, y, rs.stream);
    if (m_ex.peer(me).training && m_ex.peer(me).backward) ctx->y = y;
  }
  if (keep) saved = std::move(ctx);
  return y;
}

Tensor ExchangeStrategy::backward(nn::LegoLayer& layer, const nn::RunState& rs, const Tensor& dy,
                                  nn::LegoContext& saved) {
  auto& ctx = static_cast<ExchangeSaved&>(saved);
  const int P = m_ex.size(), me = m_ex.me();
  const bool mine = m_ex.peer(me).task >= 0 && m_ex.peer(me).backward;
  const std::vector<Route>& routes = ctx.routes;
  Tensor da, dx;
  if (mine) {
    GPPF_CHECK(ctx.y.defined() && dy.defined(), layer.name(), ": backward without a training forward");
    da = Tensor::empty(ctx.y.shape(), dy.dtype(), dy.device());
    kernels::relu_bwd(ctx.y, dy, da, kernels::GradMode::Overwrite, rs.stream);
    dx = nn::shortcut_backward(layer, rs, da, ctx.shortcut);
  }
  // Dispatch the output gradient to the members that ran my legos; receive the ones of the members I served.
  const LegoExchange::Dispatch d = m_ex.dispatch(
      routes, da, true, [&](int q) { return shape_numel(layer.output_shape(m_ex.layer_input(q, layer.index()))); },
      layer.name() + " backward dispatch");

  // Every call of the forward, in the same order: gate gradient, then the lego's backward.
  std::vector<Tensor> dxs(static_cast<std::size_t>(P)), das(static_cast<std::size_t>(P));
  std::vector<std::vector<float>> dgates(static_cast<std::size_t>(P));
  for (int p = 0; p < P; ++p)
    dgates[static_cast<std::size_t>(p)].assign(routes[static_cast<std::size_t>(p)].legos.size(), 0.0f);
  Tensor dot_out;
  for (ExchangeSaved::Call& call : ctx.calls) {
    const auto p = static_cast<std::size_t>(call.member);
    const Route& r = routes[p];
    const Shape& in_shape = m_ex.layer_input(call.member, layer.index());
    if (!das[p].defined()) das[p] = call.member == me ? da : d.part(call.member, layer.output_shape(in_shape));
    if (r.routed[call.entry] >= 0) dgates[p][call.entry] = nn::gate_gradient(rs, das[p], call.out, dot_out);
    Tensor scaled = Tensor::empty(das[p].shape(), das[p].dtype(), das[p].device());
    kernels::axpby(r.gates[call.entry], das[p], 0.0f, scaled, rs.stream);
    nn::RunState prs = rs;
    prs.task = m_ex.peer(call.member).task;
    nn::Bottleneck& lego = layer.lego(r.legos[call.entry]);
    lego.restore_saved(std::move(call.saved));
    if (call.member == me) {
      lego.backward(prs, scaled, dx, kernels::GradMode::Accumulate);
    } else if (!dxs[p].defined()) {
      dxs[p] = Tensor::empty(in_shape, DType::F32, m_ex.device());
      lego.backward(prs, scaled, dxs[p], kernels::GradMode::Overwrite);
    } else {
      lego.backward(prs, scaled, dxs[p], kernels::GradMode::Accumulate);
    }
  }
  ctx.calls.clear();
  // Combine: input gradients and gate gradients back to their members.
  std::vector<float>& dgate = dgates[static_cast<std::size_t>(me)];
  m_ex.combine_gradients(d, dxs, dgates, dx, dgate, rs.stream, layer.name() + " backward combine");
  if (!mine) return Tensor();
  layer.accumulate_router_grad(rs.task, routes[static_cast<std::size_t>(me)], dgate);
  return dx;
}

}  // namespace

std::shared_ptr<nn::LegoStrategy> make_exchange_strategy(LegoExchange& exchange) {
  return std::make_shared<ExchangeStrategy>(exchange);
}

}  // namespace gppf::dist
