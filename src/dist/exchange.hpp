#pragma once
// The expert-parallel exchange of one round (docs/SCALING.md). The members of a block each run at
// most one task path per round; before the round they tell each other what (task, batch shape,
// training or not) in one small all-gather. From that every member derives, for every lego layer, the
// routing of every member's task (routers are replicated) and so the exact send and receive counts of
// the layer's all-to-alls: no capacity factor, no dropped samples, no count exchange per layer.
#include <functional>
#include <vector>

#include "core/tensor.hpp"
#include "src/dist/comm.hpp"
#include "src/dist/communicator.hpp"
#include "src/dist/layout.hpp"
#include "src/nn/router.hpp"

namespace gppf::dist {

// What one member runs in a round.
struct PeerWork {
  int task = -1;          // -1: nothing (the member only serves the legos it holds)
  bool training = false;  // batch statistics (training, BN calibration) or running ones (evaluation)
  bool backward = false;  // a backward pass follows: keep what it needs
  float bn_momentum = -1.0f;
  std::int64_t step = 0;  // drives routing warm-up and its noise
  Shape input;            // the task's input [N, H, W, C] on that member
};

class LegoExchange {
 public:
  // `layer_inputs(x)`: the input shape of every lego layer for a backbone input of shape x. The
  // activations move over `data` (the block's members in the same order: NCCL on GPUs, buffers on
  // its device), or over MPI on `block` with host buffers when null.
  LegoExchange(Comm& block, const Layout& layout, std::function<std::vector<Shape>(const Shape&)> layer_inputs,
               std::unique_ptr<Communicator> data = nullptr);
  ~LegoExchange();
  // Where the exchanged activations live (f32): the host, or the block's GPU.
  Device device() const { return m_data->device(); }

  // Collective over the block.
  void begin_round(const PeerWork& mine);
  // True when some member runs a task this round.
  bool anyone_working() const;
  bool anyone_backward() const;

  int size() const { return m_block.size(); }
  int me() const { return m_block.rank(); }
  const PeerWork& peer(int member) const { return m_peers[static_cast<std::size_t>(member)]; }
  const Shape& layer_input(int member, int layer) const;
  // The block member holding routed lego `lego` (the same index in every layer).
  int owner(int lego) const { return m_layout.lego_owner[static_cast<std::size_t>(lego)]; }
  // Where entry j of member p's route runs (routes: every member's, in member order): shared legos
  // where the task is, routed ones on their holder.
  int where(const std::vector<nn::Route>& routes, int p, std::size_t j) const {
    const int r = routes[static_cast<std::size_t>(p)].routed[j];
    return r < 0 ? p : owner(r);
  }
  // Whether member p's task runs some of its legos on member q.
  bool needs(const std::vector<nn::Route>& routes, int p, int q) const {
    for (std::size_t j = 0; j < routes[static_cast<std::size_t>(p)].legos.size(); ++j)
      if (where(routes, p, j) == q) return true;
    return false;
  }
  Comm& comm() { return m_block; }
  // The routes of every member's task this round, in member order (empty for an idle member).
  std::vector<nn::Route> round_routes(const nn::RoutedLayer& layer) const;

  // The protocol steps of one lego layer, shared by the residual and the MLP legos. Dispatch: `mine`
  // (undefined: nothing of mine this pass) to every member holding some of my legos; from each working
  // member q (in a backward: one with a backward) whose legos I hold, count(q) floats.
  struct Dispatch {
    std::vector<std::int64_t> sent, received, at;  // floats per member; `at`: offsets into data
    Tensor data;                                   // f32 [total] on device()
    // Member q's part of data as a tensor of `shape` (a view).
    Tensor part(int q, const Shape& shape) const;
  };
  Dispatch dispatch(const std::vector<nn::Route>& routes, const Tensor& mine, bool backward,
                    const std::function<std::int64_t(int)>& count, const std::string& what);
  // Forward combine: partial[p] (the sums I ran for member p) back to p; the ones I dispatched to
  // come back and are added into acc (defined when I sent something).
  void combine_sums(const Dispatch& d, const std::vector<Tensor>& partial, Tensor& acc, const Stream& s,
                    const std::string& what);
  // Backward combine: dxs[p] followed by dgates[p] back to each member p I served; the parts for me
  // are added into dx and dgate (both defined and sized when I sent something).
  void combine_gradients(const Dispatch& d, const std::vector<Tensor>& dxs,
                         const std::vector<std::vector<float>>& dgates, Tensor& dx, std::vector<float>& dgate,
                         const Stream& s, const std::string& what);

  // One all-to-all over the block: `send` (f32 on device(), undefined when nothing goes out) holds the
  // parts for the members in member order (`send_counts` floats each); returns what arrived
  // (`recv_counts` floats from each member) and sets `at[m]` to the offset of member m's part in it.
  Tensor alltoallv(const Tensor& send, const std::vector<std::int64_t>& send_counts,
                   const std::vector<std::int64_t>& recv_counts, std::vector<std::int64_t>& at,
                   const std::string& what);
  // The tensors (any device, f32) one after another in one f32 buffer on device().
  Tensor pack(const std::vector<const Tensor*>& parts, const Stream& s) const;

 private:
  Comm& m_block;
  const Layout& m_layout;
  std::function<std::vector<Shape>(const Shape&)> m_layer_inputs;
  std::vector<PeerWork> m_peers;
  std::vector<std::vector<Shape>> m_shapes;  // per member, per layer
  std::unique_ptr<Communicator> m_data;
};

}  // namespace gppf::dist
