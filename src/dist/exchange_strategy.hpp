#pragma once
// The expert-parallel lego strategy (docs/SCALING.md): in each round every member of a block runs its
// own task (if any) and the lego calls the other members' tasks route to the legos it holds, with
// activations moved by all-to-all (src/dist/exchange.hpp). It implements nn's strategy interface.
#include <memory>

#include "src/dist/exchange.hpp"
#include "src/nn/lego_strategy.hpp"

namespace gppf::dist {

// `exchange` must outlive the strategy; every round starts with LegoExchange::begin_round.
std::shared_ptr<nn::LegoStrategy> make_exchange_strategy(LegoExchange& exchange);

}  // namespace gppf::dist
