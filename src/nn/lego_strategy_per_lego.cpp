// The per-lego strategy: each active lego runs as its own three convolutions and batch norms.
#include "kernels/elementwise.hpp"
#include "src/nn/lego_strategy.hpp"

namespace gppf::nn {

Tensor shortcut_forward(LegoLayer& layer, const RunState& rs, const Tensor& x, ShortcutSaved* saved) {
  if (saved) saved->x_shape = x.shape();
  if (layer.proj()) {
    Tensor y = layer.proj_bn()->forward(rs, layer.proj()->forward(rs, x));
    if (saved) {
      saved->conv = layer.proj()->take_saved();
      saved->bn = layer.proj_bn()->take_saved();
    }
    return y;
  }
  Tensor acc = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::axpby(1.0f, x, 0.0f, acc, rs.stream);
  return acc;
}

Tensor shortcut_backward(LegoLayer& layer, const RunState& rs, const Tensor& da, ShortcutSaved& saved) {
  Tensor dx = Tensor::empty(saved.x_shape, da.dtype(), da.device());
  if (layer.proj()) {
    layer.proj_bn()->restore_saved(std::move(saved.bn));
    layer.proj()->restore_saved(std::move(saved.conv));
    Tensor dp = layer.proj_bn()->backward(rs, da);
    layer.proj()->backward(rs, dp, &dx, kernels::GradMode::Overwrite);
  } else {
    kernels::axpby(1.0f, da, 0.0f, dx, rs.stream);
  }
  return dx;
}

float gate_gradient(const RunState& rs, const Tensor& da, const Tensor& out, Tensor& scratch) {
  if (!scratch.defined()) scratch = Tensor::empty({1}, DType::F32, da.device());
  kernels::dot(da, out, scratch, kernels::GradMode::Overwrite, rs.stream);
  return read_back(scratch, rs.stream).to_float_vector().at(0);
}

namespace {

struct PerLegoSaved final : LegoContext {
  Route route;
  ShortcutSaved shortcut;
  std::vector<Tensor> outputs;  // each active lego's output (its gate's gradient)
  std::vector<Bottleneck::Saved> legos;
  Tensor y;
};

class PerLegoStrategy final : public LegoStrategy {
 public:
  const char* name() const override { return "per-lego"; }

  Tensor forward(LegoLayer& layer, const RunState& rs, const Tensor& x, std::int64_t step,
                 std::unique_ptr<LegoContext>& saved) override {
    auto ctx = rs.training ? std::make_unique<PerLegoSaved>() : nullptr;
    const Route r = layer.route(rs.task, step, rs.training);
    if (ctx) ctx->route = r;
    Tensor acc = shortcut_forward(layer, rs, x, ctx ? &ctx->shortcut : nullptr);
    for (std::size_t j = 0; j < r.legos.size(); ++j) {
      Bottleneck& lego = layer.lego(r.legos[j]);
      Tensor o = lego.forward(rs, x);
      gated_axpby(r, j, o, 1.0f, acc, rs.stream);
      if (ctx) {
        ctx->legos.push_back(lego.take_saved());
        ctx->outputs.push_back(std::move(o));
      }
    }
    Tensor y = Tensor::empty(acc.shape(), acc.dtype(), acc.device());
    kernels::relu_fwd(acc, y, rs.stream);
    if (ctx) {
      ctx->y = y;
      saved = std::move(ctx);
    }
    return y;
  }

  Tensor backward(LegoLayer& layer, const RunState& rs, const Tensor& dy, LegoContext& saved) override {
    auto& ctx = static_cast<PerLegoSaved&>(saved);
    GPPF_CHECK(ctx.y.defined(), layer.name(), ": backward without a training forward");
    Tensor da = Tensor::empty(ctx.y.shape(), dy.dtype(), dy.device());
    kernels::relu_bwd(ctx.y, dy, da, kernels::GradMode::Overwrite, rs.stream);
    Tensor dx = shortcut_backward(layer, rs, da, ctx.shortcut);
    const Route& r = ctx.route;
    // The gate gradients stay on the device: the router's gradient is computed there.
    Tensor dgate = Tensor::empty({static_cast<std::int64_t>(r.legos.size())}, DType::F32, da.device());
    dgate.zero_(rs.stream);
    Tensor scaled = Tensor::empty(da.shape(), da.dtype(), da.device());
    for (std::size_t j = 0; j < r.legos.size(); ++j) {
      if (r.routed[j] >= 0) {
        Tensor slot = dgate.narrow0(static_cast<std::int64_t>(j), 1);
        kernels::dot(da, ctx.outputs[j], slot, kernels::GradMode::Overwrite, rs.stream);
      }
      gated_axpby(r, j, da, 0.0f, scaled, rs.stream);
      Bottleneck& lego = layer.lego(r.legos[j]);
      lego.restore_saved(std::move(ctx.legos[j]));
      lego.backward(rs, scaled, dx, kernels::GradMode::Accumulate);
    }
    layer.accumulate_router_grad(rs.task, r, dgate, rs.stream);
    return dx;
  }
};

}  // namespace

std::shared_ptr<LegoStrategy> make_per_lego_strategy() { return std::make_shared<PerLegoStrategy>(); }

}  // namespace gppf::nn
