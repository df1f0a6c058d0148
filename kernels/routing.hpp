#pragma once
// The router's gradient (docs/ARCHITECTURE.md, "Gates and router gradient"), on the gradient's device:
// the gate gradients stay where the backward computed them, and nothing is read back mid-step.
#include <vector>

#include "core/tensor.hpp"
#include "kernels/common.hpp"
#include "kernels/functors/routing.hpp"

namespace gppf::kernels {

struct RouterGradParams {
  std::vector<int> routed;   // per route entry: its router index, -1 for a shared lego
  std::vector<float> probs;  // softmax over the L router logits (routing noise included)
  // Defined: the same probabilities in memory, f32 [L] on dz's device (the step's route table,
  // nn::RouteTable), which the kernel reads instead of `probs` (a captured graph replays with the
  // values then in memory); `probs` is still given (its size is checked).
  Tensor probs_at{};
};

// dz [L] (f32) written or added: p_i (D_i - sum_{j in S} p_j D_j) from dgate [entries] (f32, dz's
// device; entry j's d loss / d gate). At most kMaxRouteEntries legos and entries. On the host both
// entry points hand their work to runtime::host_launch (core/graph.hpp), holding their tensors.
void router_grad(const RouterGradParams& p, const Tensor& dgate, Tensor& dz, GradMode mode,
                 const Stream& s = Stream::host());
// dz [L] written or added: host values (the balance regulariser's gradient, computed from the host's
// copy of the router logits).
void add_router_values(const std::vector<float>& values, Tensor& dz, GradMode mode, const Stream& s = Stream::host());

namespace host {
void router_grad(const RouterGradFunctor& f, std::int64_t legos);
}
namespace cuda {
void router_grad(const RouterGradFunctor& f, std::int64_t legos, const Stream& s);
}

}  // namespace gppf::kernels
