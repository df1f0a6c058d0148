#include "kernels/merged.hpp"

#include "core/counters.hpp"
#include "core/graph.hpp"

namespace gppf::kernels {
namespace {

// Host f32 [.., C] (C = channels) on x's device; throws on CUDA until the kernels exist.
void check(const char* op, const char* what, const Tensor& t, const Tensor& x, std::int64_t channels) {
  GPPF_CHECK(t.defined(), op, ": ", what, " is undefined");
  check_same_device(op, t, x);
  GPPF_CHECK(!t.device().is_cuda(), op, ": not implemented on CUDA yet (", what, " ", t.desc(), ")");
  check_dtype(op, what, t, DType::F32);
  GPPF_CHECK(t.ndim() >= 1 && t.dim(-1) == channels, op, ": ", what, " ", t.desc(), " must have ", channels,
             " channels");
}

void check_vec(const char* op, const char* what, const Tensor& t, const Tensor& x, std::int64_t n) {
  check(op, what, t, x, n);
  GPPF_CHECK(t.numel() == n, op, ": ", what, " ", t.desc(), " must hold ", n, " values");
}

// As `check`, and shaped like `ref`.
void check_like(const char* op, const char* what, const Tensor& t, const Tensor& ref, std::int64_t channels) {
  check(op, what, t, ref, channels);
  check_shape(op, what, t, ref.shape());
}

}  // namespace

void center_channels(const Tensor& x, const Tensor& mean, Tensor& out, const Stream&) {
  const std::int64_t C = x.defined() ? x.dim(-1) : 0;
  check("center_channels", "x", x, x, C);
  check_vec("center_channels", "mean", mean, x, C);
  check_like("center_channels", "out", out, x, C);
  runtime::count_launch();
  runtime::host_launch([x, mean, out]() mutable { host::center_channels(x, mean, out); });
}

void add_affine_relu(Tensor& y, const Tensor& shortcut, const Tensor& scale, const Tensor& shift, const Stream&) {
  const std::int64_t C = y.defined() ? y.dim(-1) : 0;
  check("add_affine_relu", "y", y, y, C);
  check_like("add_affine_relu", "shortcut", shortcut, y, C);
  check_vec("add_affine_relu", "scale", scale, y, C);
  check_vec("add_affine_relu", "shift", shift, y, C);
  runtime::count_launch();
  runtime::host_launch([y, shortcut, scale, shift]() mutable { host::add_affine_relu(y, shortcut, scale, shift); });
}

std::vector<double> relu_bwd_channel_sums(const Tensor& y, const Tensor& dy, const Tensor& z, const Tensor& zmean,
                                          Tensor& da, const Stream&) {
  const char* op = "relu_bwd_channel_sums";
  GPPF_CHECK(!runtime::capturing(), op, ": returns values to the host; it cannot run inside a captured graph");
  const std::int64_t C = y.defined() ? y.dim(-1) : 0;
  check(op, "y", y, y, C);
  check_like(op, "dy", dy, y, C);
  check_like(op, "da", da, y, C);
  if (z.defined()) {
    check_like(op, "z", z, y, C);
    check_vec(op, "zmean", zmean, y, C);
  }
  runtime::count_launch();
  runtime::count_sync();  // the sums come back to the host
  return host::relu_bwd_channel_sums(y, dy, z, zmean, da);
}

void gram_correct(Tensor& d, const Tensor& ac, const Tensor& g, const Tensor& h, const Stream&) {
  const std::int64_t K = d.defined() ? d.dim(-1) : 0;
  check("gram_correct", "d", d, d, K);
  check_like("gram_correct", "ac", ac, d, K);
  check_vec("gram_correct", "g", g, d, K * K);
  check_vec("gram_correct", "h", h, d, K);
  runtime::count_launch();
  runtime::host_launch([d, ac, g, h]() mutable { host::gram_correct(d, ac, g, h); });
}

void bn_input_grad(const Tensor& da, const Tensor& z, const Tensor& zmean, const Tensor& k1, const Tensor& k0,
                   const Tensor& k2, Tensor& out, const Stream&) {
  const char* op = "bn_input_grad";
  const std::int64_t C = da.defined() ? da.dim(-1) : 0;
  check(op, "da", da, da, C);
  check_like(op, "z", z, da, C);
  check_like(op, "out", out, da, C);
  for (const auto& [what, t] :
       {std::pair<const char*, const Tensor*>{"zmean", &zmean}, {"k1", &k1}, {"k0", &k0}, {"k2", &k2}})
    check_vec(op, what, *t, da, C);
  runtime::count_launch();
  runtime::host_launch(
      [da, z, zmean, k1, k0, k2, out]() mutable { host::bn_input_grad(da, z, zmean, k1, k0, k2, out); });
}

}  // namespace gppf::kernels
