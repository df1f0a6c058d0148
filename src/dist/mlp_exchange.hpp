#pragma once
// Expert parallelism of gppf-vit's MLP legos (docs/SCALING.md): the residual legos' exchange
// (src/dist/exchange_strategy.hpp) for a transformer block's MLP layer. Each member normalises its own
// tokens; the normalised rows go by all-to-all to the members holding its task's legos, which send
// back their gate-weighted sums; the backward returns the input gradients and gate gradients the
// same way. Layer norm, attention and routers stay with the task (replicated).
#include <memory>

#include "src/dist/exchange.hpp"
#include "src/nn/transformer.hpp"

namespace gppf::dist {

// `exchange` must outlive the runner; every round starts with LegoExchange::begin_round.
std::shared_ptr<nn::MlpLegoRunner> make_mlp_exchange(LegoExchange& exchange);

}  // namespace gppf::dist
