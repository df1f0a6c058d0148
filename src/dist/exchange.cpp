#include "src/dist/exchange.hpp"

#include <algorithm>
#include <cstring>

#include "core/error.hpp"
#include "kernels/elementwise.hpp"

namespace gppf::dist {

LegoExchange::LegoExchange(Comm& block, const Layout& layout,
                           std::function<std::vector<Shape>(const Shape&)> layer_inputs,
                           std::unique_ptr<Communicator> data)
    : m_block(block),
      m_layout(layout),
      m_layer_inputs(std::move(layer_inputs)),
      m_data(data ? std::move(data) : make_mpi_communicator_on(block)) {}

LegoExchange::~LegoExchange() = default;

Tensor LegoExchange::Dispatch::part(int q, const Shape& shape) const {
  return data.narrow0(at[static_cast<std::size_t>(q)], shape_numel(shape)).reshape(shape);
}

Tensor LegoExchange::pack(const std::vector<const Tensor*>& parts, const Stream& s) const {
  std::int64_t total = 0;
  for (const Tensor* t : parts) total += t->numel();
  Tensor buf = Tensor::empty({total}, DType::F32, device());
  std::int64_t at = 0;
  for (const Tensor* t : parts) {
    GPPF_CHECK(t->dtype() == DType::F32, "lego exchange: f32 activations expected, got ", t->desc());
    buf.narrow0(at, t->numel()).copy_from(t->reshape({t->numel()}), s);
    at += t->numel();
  }
  return buf;
}

void LegoExchange::begin_round(const PeerWork& mine) {
  GPPF_CHECK(mine.task < 0 || mine.input.size() == 4, "lego exchange: input ", shape_str(mine.input),
             " is not [N, H, W, C]");
  std::int32_t momentum_bits = 0;
  std::memcpy(&momentum_bits, &mine.bn_momentum, sizeof momentum_bits);
  std::vector<std::int64_t> rec = {
      mine.task, mine.training ? 1 : 0, mine.backward ? 1 : 0, momentum_bits, mine.step, 0, 0, 0, 0};
  for (std::size_t i = 0; i < mine.input.size() && i < 4; ++i) rec[5 + i] = mine.input[i];
  const std::size_t width = rec.size();
  const auto all = m_block.allgather(rec, "the round header (which task each member runs)");
  m_peers.assign(static_cast<std::size_t>(size()), PeerWork{});
  m_shapes.assign(static_cast<std::size_t>(size()), {});
  for (std::size_t m = 0; m < m_peers.size(); ++m) {
    const std::int64_t* r = all.data() + m * width;
    PeerWork& p = m_peers[m];
    p.task = static_cast<int>(r[0]);
    p.training = r[1] != 0;
    p.backward = r[2] != 0;
    const auto bits = static_cast<std::int32_t>(r[3]);
    std::memcpy(&p.bn_momentum, &bits, sizeof bits);
    p.step = r[4];
    if (p.task >= 0) {
      p.input = {r[5], r[6], r[7], r[8]};
      m_shapes[m] = m_layer_inputs(p.input);
    }
  }
}

Tensor LegoExchange::alltoallv(const Tensor& send, const std::vector<std::int64_t>& send_counts,
                               const std::vector<std::int64_t>& recv_counts, std::vector<std::int64_t>& at,
                               const std::string& what) {
  at.assign(recv_counts.size(), 0);
  std::int64_t total = 0;
  for (std::size_t m = 0; m < recv_counts.size(); ++m) {
    at[m] = total;
    total += recv_counts[m];
  }
  Tensor recv = Tensor::empty({total}, DType::F32, device());
  m_data->alltoallv(send.defined() ? send.data_as<float>() : nullptr, send_counts, recv.data_as<float>(), recv_counts,
                    what);
  return recv;
}

bool LegoExchange::anyone_working() const {
  for (const auto& p : m_peers)
    if (p.task >= 0) return true;
  return false;
}

bool LegoExchange::anyone_backward() const {
  for (const auto& p : m_peers)
    if (p.task >= 0 && p.backward) return true;
  return false;
}

const Shape& LegoExchange::layer_input(int member, int layer) const {
  const auto& s = m_shapes[static_cast<std::size_t>(member)];
  GPPF_CHECK(layer >= 0 && static_cast<std::size_t>(layer) < s.size(), "lego exchange: member ", member,
             " has no input shape for layer ", layer);
  return s[static_cast<std::size_t>(layer)];
}

std::vector<nn::Route> LegoExchange::round_routes(const nn::RoutedLayer& layer) const {
  std::vector<nn::Route> routes(static_cast<std::size_t>(size()));
  for (int p = 0; p < size(); ++p)
    if (peer(p).task >= 0)
      routes[static_cast<std::size_t>(p)] = layer.route(peer(p).task, peer(p).step, peer(p).training);
  return routes;
}

LegoExchange::Dispatch LegoExchange::dispatch(const std::vector<nn::Route>& routes, const Tensor& mine, bool backward,
                                              const std::function<std::int64_t(int)>& count, const std::string& what) {
  const int P = size(), me = this->me();
  Dispatch d;
  d.sent.assign(static_cast<std::size_t>(P), 0);
  d.received.assign(static_cast<std::size_t>(P), 0);
  std::vector<const Tensor*> send;
  for (int q = 0; q < P; ++q) {
    if (q == me) continue;
    const auto qi = static_cast<std::size_t>(q);
    if (mine.defined() && needs(routes, me, q)) {
      d.sent[qi] = mine.numel();
      send.push_back(&mine);
    }
    if (peer(q).task >= 0 && (!backward || peer(q).backward) && needs(routes, q, me)) d.received[qi] = count(q);
  }
  d.data = alltoallv(pack(send, Stream::host()), d.sent, d.received, d.at, what);
  return d;
}

void LegoExchange::combine_sums(const Dispatch& d, const std::vector<Tensor>& partial, Tensor& acc, const Stream& s,
                                const std::string& what) {
  const int P = size();
  std::vector<std::int64_t> sc(static_cast<std::size_t>(P), 0), rc(static_cast<std::size_t>(P), 0), at;
  std::vector<const Tensor*> send;
  for (int p = 0; p < P; ++p) {
    const auto pi = static_cast<std::size_t>(p);
    if (p == me()) continue;
    if (d.received[pi] > 0) {
      sc[pi] = partial[pi].numel();
      send.push_back(&partial[pi]);
    }
    if (d.sent[pi] > 0) rc[pi] = acc.numel();
  }
  const Tensor recv = alltoallv(pack(send, s), sc, rc, at, what);
  for (int q = 0; q < P; ++q)
    if (rc[static_cast<std::size_t>(q)] > 0)
      kernels::axpby(1.0f, recv.narrow0(at[static_cast<std::size_t>(q)], acc.numel()).reshape(acc.shape()), 1.0f, acc,
                     s);
}

void LegoExchange::combine_gradients(const Dispatch& d, const std::vector<Tensor>& dxs,
                                     const std::vector<std::vector<float>>& dgates, Tensor& dx,
                                     std::vector<float>& dgate, const Stream& s, const std::string& what) {
  const int P = size();
  std::vector<std::int64_t> sc(static_cast<std::size_t>(P), 0), rc(static_cast<std::size_t>(P), 0), at;
  std::vector<Tensor> gates(static_cast<std::size_t>(P));  // each member's gate gradients, as tensors
  std::vector<const Tensor*> send;
  for (int p = 0; p < P; ++p) {
    if (p == me()) continue;
    const auto pi = static_cast<std::size_t>(p);
    if (d.received[pi] > 0) {
      sc[pi] = dxs[pi].numel() + static_cast<std::int64_t>(dgates[pi].size());
      gates[pi] = Tensor::from_vector({static_cast<std::int64_t>(dgates[pi].size())}, dgates[pi]);
      send.push_back(&dxs[pi]);
      send.push_back(&gates[pi]);
    }
    if (d.sent[pi] > 0) rc[pi] = dx.numel() + static_cast<std::int64_t>(dgate.size());
  }
  const Tensor recv = alltoallv(pack(send, s), sc, rc, at, what);
  for (int q = 0; q < P; ++q) {
    const auto qi = static_cast<std::size_t>(q);
    if (rc[qi] == 0) continue;
    kernels::axpby(1.0f, recv.narrow0(at[qi], dx.numel()).reshape(dx.shape()), 1.0f, dx, s);
    const auto ng = static_cast<std::int64_t>(dgate.size());
    if (ng == 0) continue;
    const Tensor g = read_back(recv.narrow0(at[qi] + dx.numel(), ng), s);
    for (std::size_t j = 0; j < dgate.size(); ++j) dgate[j] += g.data_as<float>()[j];
  }
}

}  // namespace gppf::dist
