#include "kernels/routing.hpp"

#include "core/graph.hpp"

namespace gppf::kernels {
namespace {

RouterGradFunctor make_functor(const char* op, Tensor& dz, GradMode mode) {
  check_dtype(op, "dz", dz, DType::F32);
  GPPF_CHECK(dz.ndim() == 1 && dz.numel() >= 1 && dz.numel() <= kMaxRouteEntries, op, ": dz ", dz.desc(),
             " must hold 1 to ", kMaxRouteEntries, " router logits");
  RouterGradFunctor f{};
  f.dz = dz.data_as<float>();
  f.accumulate = mode == GradMode::Accumulate;
  return f;
}

// `held`: the tensors f points into, kept alive by the host work (f itself holds raw pointers).
void run(const RouterGradFunctor& f, const Tensor& dz, const std::vector<Tensor>& held, const Stream& s) {
  const std::int64_t legos = dz.numel();
  if (launch_on_cuda(dz.device()))
    cuda::router_grad(f, legos, s);
  else
    runtime::host_launch([f, legos, dz, held] { host::router_grad(f, legos); });
}

}  // namespace

void router_grad(const RouterGradParams& p, const Tensor& dgate, Tensor& dz, GradMode mode, const Stream& s) {
  constexpr const char* op = "router_grad";
  RouterGradFunctor f = make_functor(op, dz, mode);
  const auto L = dz.numel();
  const auto entries = static_cast<std::int64_t>(p.routed.size());
  GPPF_CHECK(static_cast<std::int64_t>(p.probs.size()) == L, op, ": ", p.probs.size(), " probabilities for ",
             dz.desc());
  GPPF_CHECK(entries >= 1 && entries <= kMaxRouteEntries, op, ": ", entries, " route entries (1 to ", kMaxRouteEntries,
             ")");
  check_dtype(op, "dgate", dgate, DType::F32);
  check_same_device(op, dgate, dz);
  check_shape(op, "dgate", dgate, {entries});
  f.dgate = dgate.data_as<float>();
  f.entries = static_cast<int>(entries);
  for (std::int64_t j = 0; j < entries; ++j) {
    const int r = p.routed[static_cast<std::size_t>(j)];
    GPPF_CHECK(r >= -1 && r < L, op, ": route entry ", j, " names router index ", r, " of ", L);
    f.routed[j] = r;
  }
  for (std::int64_t i = 0; i < L; ++i) f.probs[i] = p.probs[static_cast<std::size_t>(i)];
  std::vector<Tensor> held{dgate};
  if (p.probs_at.defined()) {
    check_dtype(op, "probs_at", p.probs_at, DType::F32);
    check_same_device(op, p.probs_at, dz);
    check_shape(op, "probs_at", p.probs_at, {L});
    f.probs_at = p.probs_at.data_as<float>();
    held.push_back(p.probs_at);
  }
  run(f, dz, held, s);
}

void add_router_values(const std::vector<float>& values, Tensor& dz, GradMode mode, const Stream& s) {
  constexpr const char* op = "add_router_values";
  RouterGradFunctor f = make_functor(op, dz, mode);
  GPPF_CHECK(static_cast<std::int64_t>(values.size()) == dz.numel(), op, ": ", values.size(), " values for ",
             dz.desc());
  for (std::size_t i = 0; i < values.size(); ++i) f.extra[i] = values[i];
  run(f, dz, {}, s);
}

}  // namespace gppf::kernels
