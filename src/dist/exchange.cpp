#include "src/dist/exchange.hpp"

#include <algorithm>
#include <cstring>

#include "core/error.hpp"
#include "kernels/elementwise.hpp"

namespace gppf::dist {

LegoExchange::LegoExchange(Comm& block, const Layout& layout,
                           std::function<std::vector<Shape>(const Shape&)> layer_inputs)
    : m_block(block), m_layout(layout), m_layer_inputs(std::move(layer_inputs)) {}

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

std::vector<float> LegoExchange::alltoallv(const std::vector<float>& send, const std::vector<std::int64_t>& send_counts,
                                           const std::vector<std::int64_t>& recv_counts, std::vector<std::int64_t>& at,
                                           const std::string& what) {
  at.assign(recv_counts.size(), 0);
  std::int64_t total = 0;
  for (std::size_t m = 0; m < recv_counts.size(); ++m) {
    at[m] = total;
    total += recv_counts[m];
  }
  std::vector<float> recv(static_cast<std::size_t>(total));
  m_block.alltoallv(send.data(), send_counts, recv.data(), recv_counts, what);
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
  std::vector<float> send;
  for (int q = 0; q < P; ++q) {
    if (q == me) continue;
    const auto qi = static_cast<std::size_t>(q);
    if (mine.defined() && needs(routes, me, q)) {
      d.sent[qi] = mine.numel();
      append_floats(send, mine);
    }
    if (peer(q).task >= 0 && (!backward || peer(q).backward) && needs(routes, q, me)) d.received[qi] = count(q);
  }
  d.data = alltoallv(send, d.sent, d.received, d.at, what);
  return d;
}

void LegoExchange::combine_sums(const Dispatch& d, const std::vector<Tensor>& partial, Tensor& acc, const Stream& s,
                                const std::string& what) {
  const int P = size();
  std::vector<std::int64_t> sc(static_cast<std::size_t>(P), 0), rc(static_cast<std::size_t>(P), 0), at;
  std::vector<float> send;
  for (int p = 0; p < P; ++p) {
    const auto pi = static_cast<std::size_t>(p);
    if (p == me()) continue;
    if (d.received[pi] > 0) {
      sc[pi] = partial[pi].numel();
      append_floats(send, partial[pi]);
    }
    if (d.sent[pi] > 0) rc[pi] = acc.numel();
  }
  const std::vector<float> recv = alltoallv(send, sc, rc, at, what);
  for (int q = 0; q < P; ++q)
    if (rc[static_cast<std::size_t>(q)] > 0)
      kernels::axpby(1.0f, tensor_from_floats(recv.data() + at[static_cast<std::size_t>(q)], acc.shape()), 1.0f, acc,
                     s);
}

void LegoExchange::combine_gradients(const Dispatch& d, const std::vector<Tensor>& dxs,
                                     const std::vector<std::vector<float>>& dgates, Tensor& dx,
                                     std::vector<float>& dgate, const Stream& s, const std::string& what) {
  const int P = size();
  std::vector<std::int64_t> sc(static_cast<std::size_t>(P), 0), rc(static_cast<std::size_t>(P), 0), at;
  std::vector<float> send;
  for (int p = 0; p < P; ++p) {
    if (p == me()) continue;
    const auto pi = static_cast<std::size_t>(p);
    if (d.received[pi] > 0) {
      sc[pi] = dxs[pi].numel() + static_cast<std::int64_t>(dgates[pi].size());
      append_floats(send, dxs[pi]);
      send.insert(send.end(), dgates[pi].begin(), dgates[pi].end());
    }
    if (d.sent[pi] > 0) rc[pi] = dx.numel() + static_cast<std::int64_t>(dgate.size());
  }
  const std::vector<float> recv = alltoallv(send, sc, rc, at, what);
  for (int q = 0; q < P; ++q) {
    if (rc[static_cast<std::size_t>(q)] == 0) continue;
    const float* part = recv.data() + at[static_cast<std::size_t>(q)];
    kernels::axpby(1.0f, tensor_from_floats(part, dx.shape()), 1.0f, dx, s);
    for (std::size_t j = 0; j < dgate.size(); ++j) dgate[j] += part[dx.numel() + static_cast<std::int64_t>(j)];
  }
}

Tensor tensor_from_floats(const float* data, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::F32);
  std::copy(data, data + t.numel(), t.data_as<float>());
  return t;
}

void append_floats(std::vector<float>& buf, const Tensor& t) {
  const float* p = t.data_as<float>();
  buf.insert(buf.end(), p, p + t.numel());
}

}  // namespace gppf::dist
