#include "src/dist/mlp_exchange.hpp"

#include "kernels/elementwise.hpp"
#include "src/nn/lego_strategy.hpp"

namespace gppf::dist {
namespace {

using nn::Route;

// One round of one MLP layer: every member's route, and the lego calls this member ran (its own and
// the ones it served) in call order, with what their backwards need.
struct MlpExchangeSaved final : nn::LegoContext {
  struct Call {
    int member = 0;
    std::size_t entry = 0;  // index into routes[member].legos
    nn::MlpLego::Saved saved;
    Tensor out;  // the lego's output (its gate's gradient)
  };
  std::vector<Route> routes;
  std::vector<Call> calls;
};

Shape rows_of(const Shape& tokens) { return {tokens[0] * tokens[1], tokens[2]}; }

class MlpExchange final : public nn::MlpLegoRunner {
 public:
  explicit MlpExchange(LegoExchange& ex) : m_ex(ex) {}
  Tensor forward(nn::MlpLegoLayer& layer, const nn::RunState& rs, const Tensor& h, std::int64_t step,
                 std::unique_ptr<nn::LegoContext>& saved) override;
  Tensor backward(nn::MlpLegoLayer& layer, const nn::RunState& rs, const Tensor& dy, nn::LegoContext& saved) override;

 private:
  // Member p's rows in this layer.
  Shape member_rows(const nn::MlpLegoLayer& layer, int p) const { return rows_of(m_ex.layer_input(p, layer.index())); }

  LegoExchange& m_ex;
};

Tensor MlpExchange::forward(nn::MlpLegoLayer& layer, const nn::RunState& rs, const Tensor& h, std::int64_t,
                            std::unique_ptr<nn::LegoContext>& saved) {
  const int P = m_ex.size(), me = m_ex.me();
  const bool mine = m_ex.peer(me).task >= 0;
  GPPF_CHECK(mine == h.defined(), layer.name(), ": this rank's round header and its input disagree");
  if (mine)
    GPPF_CHECK(h.device() == m_ex.device() && h.dtype() == DType::F32, layer.name(),
               ": expert-parallel input expected f32 on ", m_ex.device().str(), " (precision: fp32), got ", h.desc());
  auto ctx = std::make_unique<MlpExchangeSaved>();
  ctx->routes = m_ex.round_routes(layer);
  const std::vector<Route>& routes = ctx->routes;
  // Dispatch: my rows to the members holding some of my legos; the rows of the members I serve.
  const LegoExchange::Dispatch d = m_ex.dispatch(
      routes, h, false, [&](int q) { return shape_numel(member_rows(layer, q)); }, layer.name() + " forward dispatch");
  // The calls this member holds, member by member, in route order: partial[p] is member p's
  // gate-weighted sum of them.
  const bool keep = m_ex.anyone_backward();
  std::vector<Tensor> partial(static_cast<std::size_t>(P));
  for (int p = 0; p < P; ++p) {
    const auto pi = static_cast<std::size_t>(p);
    const PeerWork& peer = m_ex.peer(p);
    if (peer.task < 0 || (p != me && d.received[pi] == 0)) continue;
    const Tensor in = p == me ? h : d.part(p, member_rows(layer, p));
    nn::RunState prs = rs;
    prs.task = peer.task;
    prs.training = peer.training;
    const Route& r = routes[pi];
    for (std::size_t j = 0; j < r.legos.size(); ++j) {
      if (m_ex.where(routes, p, j) != me) continue;
      nn::MlpLego& lego = layer.lego(r.legos[j]);
      Tensor o = lego.forward(prs, in);
      if (!partial[pi].defined()) {
        partial[pi] = Tensor::empty(o.shape(), o.dtype(), o.device());
        kernels::axpby(r.gates[j], o, 0.0f, partial[pi], rs.stream);
      } else {
        kernels::axpby(r.gates[j], o, 1.0f, partial[pi], rs.stream);
      }
      if (keep && peer.training && peer.backward) ctx->calls.push_back({p, j, lego.take_saved(), o});
    }
  }
  // Combine: the sums go back to the members they belong to.
  Tensor sum;
  if (mine) {
    sum = partial[static_cast<std::size_t>(me)];
    if (!sum.defined()) {  // none of my legos is here
      sum = Tensor::empty(h.shape(), h.dtype(), h.device());
      sum.zero_(rs.stream);
    }
  }
  m_ex.combine_sums(d, partial, sum, rs.stream, layer.name() + " forward combine");
  saved = nullptr;
  if (keep) saved = std::move(ctx);
  return sum;
}

Tensor MlpExchange::backward(nn::MlpLegoLayer& layer, const nn::RunState& rs, const Tensor& dy,
                             nn::LegoContext& saved) {
  auto& ctx = static_cast<MlpExchangeSaved&>(saved);
  const int P = m_ex.size(), me = m_ex.me();
  const bool mine = m_ex.peer(me).task >= 0 && m_ex.peer(me).backward;
  GPPF_CHECK(mine == dy.defined(), layer.name(), ": this rank's round header and its gradient disagree");
  const std::vector<Route>& routes = ctx.routes;
  // Dispatch my output gradient to the members that ran my legos; receive the ones of the members I served.
  const LegoExchange::Dispatch d = m_ex.dispatch(
      routes, dy, true, [&](int q) { return shape_numel(member_rows(layer, q)); }, layer.name() + " backward dispatch");
  // Every call of the forward, in the same order: gate gradient, then the lego's backward.
  std::vector<Tensor> dys(static_cast<std::size_t>(P)), dhs(static_cast<std::size_t>(P));
  std::vector<std::vector<float>> dgates(static_cast<std::size_t>(P));
  for (int p = 0; p < P; ++p)
    dgates[static_cast<std::size_t>(p)].assign(routes[static_cast<std::size_t>(p)].legos.size(), 0.0f);
  Tensor dot_out;
  for (MlpExchangeSaved::Call& call : ctx.calls) {
    const auto p = static_cast<std::size_t>(call.member);
    const Route& r = routes[p];
    if (!dys[p].defined()) dys[p] = call.member == me ? dy : d.part(call.member, member_rows(layer, call.member));
    if (r.routed[call.entry] >= 0) dgates[p][call.entry] = nn::gate_gradient(rs, dys[p], call.out, dot_out);
    Tensor scaled = Tensor::empty(dys[p].shape(), dys[p].dtype(), dys[p].device());
    kernels::axpby(r.gates[call.entry], dys[p], 0.0f, scaled, rs.stream);
    nn::RunState prs = rs;
    prs.task = m_ex.peer(call.member).task;
    nn::MlpLego& lego = layer.lego(r.legos[call.entry]);
    lego.restore_saved(std::move(call.saved));
    const bool first = !dhs[p].defined();
    if (first) dhs[p] = Tensor::empty(dys[p].shape(), DType::F32, m_ex.device());
    lego.backward(prs, scaled, dhs[p], first ? kernels::GradMode::Overwrite : kernels::GradMode::Accumulate);
  }
  ctx.calls.clear();
  // Combine: input gradients and gate gradients back to their members.
  Tensor dh = dhs[static_cast<std::size_t>(me)];
  if (mine && !dh.defined()) {  // none of my legos is here
    dh = Tensor::empty(dy.shape(), DType::F32, m_ex.device());
    dh.zero_(rs.stream);
  }
  std::vector<float>& dgate = dgates[static_cast<std::size_t>(me)];
  m_ex.combine_gradients(d, dhs, dgates, dh, dgate, rs.stream, layer.name() + " backward combine");
  if (!mine) return Tensor();
  layer.routing().accumulate_grad(rs.task, routes[static_cast<std::size_t>(me)], dgate);
  return dh;
}

}  // namespace

std::shared_ptr<nn::MlpLegoRunner> make_mlp_exchange(LegoExchange& exchange) {
  return std::make_shared<MlpExchange>(exchange);
}

}  // namespace gppf::dist
