#include "kernels/optim.hpp"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

#include "core/counters.hpp"
#include "core/graph.hpp"
#include "kernels/common.hpp"
#include "kernels/functors/multi_tensor.hpp"

namespace gppf::kernels {
namespace {

// launch_on_cuda counts one launch; the CUDA backend makes one per pack of tensors, and one or two per
// tensor of a reduction (kernels/functors/multi_tensor.hpp): the rest are counted here, on every device.
template <class F>
void count_packs(const std::vector<F>&, const std::vector<std::int64_t>& ns) {
  const auto nonempty =
      static_cast<std::int64_t>(std::count_if(ns.begin(), ns.end(), [](std::int64_t n) { return n > 0; }));
  runtime::count_launches(std::max<std::int64_t>(0, pack_count(nonempty, TensorPack<F>::kCapacity) - 1));
}
template <class F>
void count_reductions(const std::vector<F>&, const std::vector<std::int64_t>& ns, const std::vector<double*>&) {
  const auto packs = pack_count(static_cast<std::int64_t>(ns.size()), ReducePack<F>::kCapacity);
  runtime::count_launches(std::max<std::int64_t>(0, 2 * packs - 1));
}

void check_param(const char* op, const Tensor* param) {
  GPPF_CHECK(param && param->defined(), op, ": parameter is not allocated");
  check_dtype(op, "parameter", *param, DType::F32);
}

// Every tensor of one update is f32, has the parameter's shape and lives on its device.
void check_like(const char* op, const char* what, const Tensor* t, const Tensor& param) {
  GPPF_CHECK(t && t->defined(), op, ": ", what, " is not allocated (parameter ", param.desc(), ")");
  check_dtype(op, what, *t, DType::F32);
  check_shape(op, what, *t, param.shape());
  check_same_device(op, *t, param);
}

// One list, one device: the first tensor's.
void check_device(const char* op, const Tensor& first, const Tensor& t) {
  GPPF_CHECK(t.device() == first.device(), op, ": one list mixes ", first.desc(), " and ", t.desc());
}

// 1 / (1 - beta^step), the bias correction of a moment after `step` updates.
float inv_bias_correction(const char* op, float beta, std::int64_t step) {
  GPPF_CHECK(step >= 1, op, ": step count must be >= 1, got ", step);
  return static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(beta), static_cast<double>(step))));
}

float* f32(Tensor* t) { return t ? t->data_as<float>() : nullptr; }
const float* f32(const Tensor* t) { return t ? t->data_as<float>() : nullptr; }

// The host work runs the functors' data pointers, the addresses a CUDA graph bakes. While a graph
// captures, it also holds the tensors, so that their memory outlives the caller's (the eager path
// copies nothing). The reductions' `out` slots are recorded as given: inside a capture they must be
// tensor memory that lives as long as the graph (the optimizers' SumBuffer), not a caller's stack.
void keep_alive(std::vector<Tensor>& keep, std::initializer_list<const Tensor*> ts) {
  if (!runtime::capturing()) return;
  for (const Tensor* t : ts)
    if (t) keep.push_back(*t);
}

}  // namespace

void sgd_update(std::span<const SgdUpdate> updates, const Stream& stream) {
  constexpr const char* op = "sgd_update";
  if (updates.empty()) return;
  std::vector<SgdFunctor> fs;
  std::vector<Tensor> keep;
  std::vector<std::int64_t> ns;
  for (const SgdUpdate& u : updates) {
    check_param(op, u.param);
    check_device(op, *updates[0].param, *u.param);
    check_like(op, "grad", u.grad, *u.param);
    GPPF_CHECK(u.momentum || u.params.momentum == 0.0f, op, ": momentum ", u.params.momentum,
               " needs a momentum buffer");
    if (u.momentum) check_like(op, "momentum", u.momentum, *u.param);
    keep_alive(keep, {u.param, u.grad, u.momentum});
    const SgdParams& p = u.params;
    fs.push_back(
        {f32(u.param), f32(u.grad), f32(u.momentum), p.lr, p.momentum, p.weight_decay, p.grad_scale, p.nesterov});
    ns.push_back(u.param->numel());
  }
  count_packs(fs, ns);
  if (launch_on_cuda(updates[0].param->device()))
    cuda::sgd_update(fs, ns, stream);
  else
    runtime::host_launch(
        [fs = std::move(fs), ns = std::move(ns), keep = std::move(keep)] { host::sgd_update(fs, ns); });
}

void adamw_update(std::span<const AdamWUpdate> updates, const Stream& stream) {
  constexpr const char* op = "adamw_update";
  if (updates.empty()) return;
  std::vector<AdamWFunctor> fs;
  std::vector<Tensor> keep;
  std::vector<std::int64_t> ns;
  for (const AdamWUpdate& u : updates) {
    check_param(op, u.param);
    check_device(op, *updates[0].param, *u.param);
    check_like(op, "grad", u.grad, *u.param);
    check_like(op, "exp_avg", u.exp_avg, *u.param);
    check_like(op, "exp_avg_sq", u.exp_avg_sq, *u.param);
    keep_alive(keep, {u.param, u.grad, u.exp_avg, u.exp_avg_sq});
    const AdamWParams& p = u.params;
    fs.push_back({f32(u.param), f32(u.grad), f32(u.exp_avg), f32(u.exp_avg_sq), p.lr, p.beta1, p.beta2, p.eps,
                  p.weight_decay, p.grad_scale, inv_bias_correction(op, p.beta1, p.step),
                  inv_bias_correction(op, p.beta2, p.step)});
    ns.push_back(u.param->numel());
  }
  count_packs(fs, ns);
  if (launch_on_cuda(updates[0].param->device()))
    cuda::adamw_update(fs, ns, stream);
  else
    runtime::host_launch(
        [fs = std::move(fs), ns = std::move(ns), keep = std::move(keep)] { host::adamw_update(fs, ns); });
}

void lars_update(std::span<const LarsUpdate> updates, const Stream& stream) {
  constexpr const char* op = "lars_update";
  if (updates.empty()) return;
  std::vector<LarsFunctor> fs;
  std::vector<Tensor> keep;
  std::vector<std::int64_t> ns;
  for (const LarsUpdate& u : updates) {
    check_param(op, u.param);
    check_device(op, *updates[0].param, *u.param);
    check_like(op, "grad", u.grad, *u.param);
    GPPF_CHECK(u.momentum || u.params.momentum == 0.0f, op, ": momentum ", u.params.momentum,
               " needs a momentum buffer");
    if (u.momentum) check_like(op, "momentum", u.momentum, *u.param);
    keep_alive(keep, {u.param, u.grad, u.momentum});
    const LarsParams& p = u.params;
    fs.push_back({f32(u.param), f32(u.grad), f32(u.momentum), p.lr, p.momentum, p.weight_decay, p.trust, p.grad_scale,
                  p.nesterov});
    ns.push_back(u.param->numel());
  }
  count_packs(fs, ns);
  if (launch_on_cuda(updates[0].param->device()))
    cuda::lars_update(fs, ns, stream);
  else
    runtime::host_launch(
        [fs = std::move(fs), ns = std::move(ns), keep = std::move(keep)] { host::lars_update(fs, ns); });
}

void lamb_moments(std::span<const LambMoments> updates, const Stream& stream) {
  constexpr const char* op = "lamb_moments";
  if (updates.empty()) return;
  std::vector<LambMomentsFunctor> fs;
  std::vector<Tensor> keep;
  std::vector<std::int64_t> ns;
  std::vector<double*> outs;
  for (const LambMoments& u : updates) {
    check_param(op, u.param);
    check_device(op, *updates[0].param, *u.param);
    check_like(op, "grad", u.grad, *u.param);
    check_like(op, "exp_avg", u.exp_avg, *u.param);
    check_like(op, "exp_avg_sq", u.exp_avg_sq, *u.param);
    GPPF_CHECK(u.out, op, ": no output for the norms");
    keep_alive(keep, {u.param, u.grad, u.exp_avg, u.exp_avg_sq});
    const LambParams& p = u.params;
    fs.push_back({f32(u.param), f32(u.grad), f32(u.exp_avg), f32(u.exp_avg_sq), p.beta1, p.beta2, p.eps, p.weight_decay,
                  p.grad_scale, inv_bias_correction(op, p.beta1, p.step), inv_bias_correction(op, p.beta2, p.step)});
    ns.push_back(u.param->numel());
    outs.push_back(u.out);
  }
  count_reductions(fs, ns, outs);
  if (launch_on_cuda(updates[0].param->device()))
    cuda::lamb_moments(fs, ns, outs, stream);
  else
    runtime::host_launch([fs = std::move(fs), ns = std::move(ns), outs = std::move(outs), keep = std::move(keep)] {
      host::lamb_moments(fs, ns, outs);
    });
}

void lamb_apply(std::span<const LambApply> updates, const Stream& stream) {
  constexpr const char* op = "lamb_apply";
  if (updates.empty()) return;
  std::vector<LambApplyFunctor> fs;
  std::vector<Tensor> keep;
  std::vector<std::int64_t> ns;
  for (const LambApply& u : updates) {
    check_param(op, u.param);
    check_device(op, *updates[0].param, *u.param);
    check_like(op, "exp_avg", u.exp_avg, *u.param);
    check_like(op, "exp_avg_sq", u.exp_avg_sq, *u.param);
    keep_alive(keep, {u.param, u.exp_avg, u.exp_avg_sq});
    const LambParams& p = u.params;
    fs.push_back({f32(u.param), f32(u.exp_avg), f32(u.exp_avg_sq), u.step, p.eps, p.weight_decay,
                  inv_bias_correction(op, p.beta1, p.step), inv_bias_correction(op, p.beta2, p.step)});
    ns.push_back(u.param->numel());
  }
  count_packs(fs, ns);
  if (launch_on_cuda(updates[0].param->device()))
    cuda::lamb_apply(fs, ns, stream);
  else
    runtime::host_launch(
        [fs = std::move(fs), ns = std::move(ns), keep = std::move(keep)] { host::lamb_apply(fs, ns); });
}

void sum_squares(std::span<const SumSquares> sums, const Stream& stream) {
  constexpr const char* op = "sum_squares";
  if (sums.empty()) return;
  std::vector<SumSquaresFunctor> fs;
  std::vector<Tensor> keep;
  std::vector<std::int64_t> ns;
  std::vector<double*> outs;
  for (const SumSquares& s : sums) {
    GPPF_CHECK(s.x && s.x->defined(), op, ": input is not allocated");
    check_dtype(op, "x", *s.x, DType::F32);
    check_device(op, *sums[0].x, *s.x);
    if (s.y) check_like(op, "y", s.y, *s.x);
    GPPF_CHECK(s.out, op, ": no output");
    keep_alive(keep, {s.x, s.y});
    fs.push_back({f32(s.x), f32(s.y)});
    ns.push_back(s.x->numel());
    outs.push_back(s.out);
  }
  count_reductions(fs, ns, outs);
  if (launch_on_cuda(sums[0].x->device()))
    cuda::sum_squares(fs, ns, outs, stream);
  else
    runtime::host_launch([fs = std::move(fs), ns = std::move(ns), outs = std::move(outs), keep = std::move(keep)] {
      host::sum_squares(fs, ns, outs);
    });
}

void sum_squares(const Tensor& x, const Tensor* y, double* out, const Stream& stream) {
  const SumSquares one{&x, y, out};
  sum_squares(std::span<const SumSquares>(&one, 1), stream);
}

void copy_tensors(std::span<const CopyJob> jobs, const Stream& stream) {
  constexpr const char* op = "copy_tensors";
  if (jobs.empty()) return;
  std::vector<CopyFunctor> fs;
  std::vector<Tensor> keep;
  std::vector<std::int64_t> ns;
  for (const CopyJob& j : jobs) {
    GPPF_CHECK(j.src && j.dst && j.src->defined() && j.dst->defined(), op, ": undefined tensor");
    check_dtype(op, "src", *j.src, DType::F32);
    check_device(op, *jobs[0].src, *j.src);
    check_like(op, "dst", j.dst, *j.src);
    keep_alive(keep, {j.src, j.dst});
    fs.push_back({j.src->data_as<float>(), j.dst->data_as<float>()});
    ns.push_back(j.src->numel());
  }
  count_packs(fs, ns);
  if (launch_on_cuda(jobs[0].src->device()))
    cuda::copy_tensors(fs, ns, stream);
  else
    runtime::host_launch(
        [fs = std::move(fs), ns = std::move(ns), keep = std::move(keep)] { host::copy_tensors(fs, ns); });
}

void scale_(Tensor& x, float alpha, const Stream& stream) {
  check_dtype("scale_", "x", x, DType::F32);
  const ScaleFunctor f{x.data_as<float>(), alpha};
  if (launch_on_cuda(x.device()))
    cuda::scale_(f, x.numel(), stream);
  else
    runtime::host_launch([f, n = x.numel(), keep = x] { host::scale_(f, n); });
}

}  // namespace gppf::kernels
