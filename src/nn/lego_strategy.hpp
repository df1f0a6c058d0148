#pragma once
// How a lego layer runs a routed step, y = relu(shortcut(x) + sum_j g_j lego_j(x)) (src/nn/lego.hpp),
// chosen once per run (docs/ARCHITECTURE.md, "Lego layers"):
//  - per-lego: each active lego in turn (lego_strategy_per_lego.cpp);
//  - merged: a task's active legos as one wide block (lego_strategy_merged.cpp, src/nn/merged_legos.hpp);
//  - exchange: expert parallelism, each lego on the rank holding it (src/dist/exchange_strategy.hpp);
//  - task-batched: several tasks' samples in one batch, each lego once (lego_strategy_batched.cpp).
// The layer owns legos, router and statistics; a strategy owns nothing of a step but what its
// forward returns as the saved context. Strategies are device-agnostic: the same code runs on the
// host and on CUDA, only the kernels behind kernels/*.hpp differ. Gates go to the kernels through
// gated_axpby / gate_address and probabilities through Router::accumulate_grad (src/nn/router.hpp),
// which read them from the step's route table when the route was prepared (a captured graph's
// kernels then see each step's values); the merged block (src/nn/merged_legos.cpp) still takes them
// by value.
#include <memory>

#include "src/nn/lego.hpp"

namespace gppf::nn {

class LegoStrategy {
 public:
  virtual ~LegoStrategy() = default;
  virtual const char* name() const = 0;
  // The layer's output for rs.task's route at `step`; `saved` gets what a backward needs (left null
  // when none can follow, e.g. inference).
  virtual Tensor forward(LegoLayer& layer, const RunState& rs, const Tensor& x, std::int64_t step,
                         std::unique_ptr<LegoContext>& saved) = 0;
  // The input gradient (overwritten); writes the legos' and the router's gradients.
  virtual Tensor backward(LegoLayer& layer, const RunState& rs, const Tensor& dy, LegoContext& saved) = 0;
  // Whether a rank may run the layer without an input (it serves its legos to others).
  virtual bool serves_without_input() const { return false; }
};

std::shared_ptr<LegoStrategy> make_per_lego_strategy();
// Falls back to per-lego for routes of one lego and for synchronised BN (RunState::bn_sync): the
// merged block computes its batch statistics from the local batch.
std::shared_ptr<LegoStrategy> make_merged_strategy();
// Several tasks' samples in one batch (RunState::segments): each lego runs once on the samples of
// every task that routed to it (lego_strategy_batched.cpp). Lego layers take it for any forward with
// segments, whatever their strategy.
std::shared_ptr<LegoStrategy> make_batched_strategy();

// The shortcut (x itself, or the projection conv + BN) with what its backward needs.
struct ShortcutSaved {
  Tensor conv;
  BatchNorm::Saved bn;
  Shape x_shape;
};
Tensor shortcut_forward(LegoLayer& layer, const RunState& rs, const Tensor& x, ShortcutSaved* saved);
Tensor shortcut_backward(LegoLayer& layer, const RunState& rs, const Tensor& da, ShortcutSaved& saved);

// d loss / d gate of one lego: sum(da * lego output), read back to the host.
float gate_gradient(const RunState& rs, const Tensor& da, const Tensor& out, Tensor& scratch);

}  // namespace gppf::nn
