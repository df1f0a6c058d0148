// The merged strategy: a task's active legos as one wide block (src/nn/merged_legos.hpp).
#include "src/nn/lego_strategy.hpp"
#include "src/nn/merged_legos.hpp"

namespace gppf::nn {
namespace {

struct MergedSaved final : LegoContext {
  Route route;
  MergedLegos block;
};

class MergedStrategy final : public LegoStrategy {
 public:
  const char* name() const override { return "merged"; }

  Tensor forward(LegoLayer& layer, const RunState& rs, const Tensor& x, std::int64_t step,
                 std::unique_ptr<LegoContext>& saved) override {
    Route r = layer.route(rs.task, step, rs.training);
    if (r.legos.size() < 2 || rs.bn_sync) return m_per_lego->forward(layer, rs, x, step, saved);
    std::vector<Bottleneck*> legos;
    for (int i : r.legos) legos.push_back(&layer.lego(i));
    auto ctx = std::make_unique<MergedSaved>();
    Tensor y = ctx->block.forward(rs, x, std::move(legos), r.gates, layer.proj(), layer.proj_bn());
    if (rs.training) {
      ctx->route = std::move(r);
      saved = std::move(ctx);
    }
    return y;
  }

  Tensor backward(LegoLayer& layer, const RunState& rs, const Tensor& dy, LegoContext& saved) override {
    auto* ctx = dynamic_cast<MergedSaved*>(&saved);
    if (!ctx) return m_per_lego->backward(layer, rs, dy, saved);
    std::vector<float> dgate;
    Tensor dx = ctx->block.backward(rs, dy, dgate);
    layer.accumulate_router_grad(rs.task, ctx->route, dgate);
    return dx;
  }

 private:
  std::shared_ptr<LegoStrategy> m_per_lego = make_per_lego_strategy();
};

}  // namespace

std::shared_ptr<LegoStrategy> make_merged_strategy() { return std::make_shared<MergedStrategy>(); }

}  // namespace gppf::nn
