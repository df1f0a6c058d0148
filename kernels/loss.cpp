#include "kernels/loss.hpp"

#include <algorithm>
#include <cmath>

#include "core/graph.hpp"

namespace gppf::kernels {
namespace {

// The input of a loss: f32 on the host, f32 or bf16 on CUDA.
void check_input(const char* op, const char* what, const Tensor& t) {
  if (t.device().is_cuda())
    GPPF_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, op, ": ", what,
               " must be f32 or bf16 on CUDA, got ", t.desc());
  else
    check_dtype(op, what, t, DType::F32);
}

// Targets and weights: the input's shape, device, and f32 or the input's dtype.
void check_like(const char* op, const char* what, const Tensor& t, const Tensor& input) {
  check_shape(op, what, t, input.shape());
  check_same_device(op, input, t);
  GPPF_CHECK(t.dtype() == DType::F32 || t.dtype() == input.dtype(), op, ": ", what, " must be f32 or ",
             dtype_name(input.dtype()), ", got ", t.desc());
}

void check_outputs(const char* op, const Tensor& input, const Tensor& loss, const Tensor* grad) {
  check_shape(op, "loss", loss, {1});
  check_dtype(op, "loss", loss, DType::F32);
  check_same_device(op, input, loss);
  if (grad) {
    check_shape(op, "gradient", *grad, input.shape());
    check_dtype(op, "gradient", *grad, input.dtype());
    check_same_device(op, input, *grad);
  }
}

// A copy of an optional output (null: none) for the host work, which must not hold the caller's pointer.
struct OptionalTensor {
  Tensor t;
  bool given = false;
  Tensor* get() { return given ? &t : nullptr; }
};
OptionalTensor optional_copy(const Tensor* t) { return t ? OptionalTensor{*t, true} : OptionalTensor{}; }

}  // namespace

void softmax_cross_entropy(const CrossEntropyParams& p, const Tensor& logits, const Tensor& labels, Tensor& loss,
                           GradMode loss_mode, Tensor* dlogits, const Stream& s) {
  constexpr const char* op = "softmax_cross_entropy";
  GPPF_CHECK(logits.ndim() >= 1 && logits.dim(-1) >= 1, op, ": logits ", logits.desc(),
             " need a last (class) dimension of at least 1");
  check_input(op, "logits", logits);
  Shape rows_shape = logits.shape();
  rows_shape.pop_back();
  check_shape(op, "labels", labels, rows_shape);
  check_dtype(op, "labels", labels, DType::I32);
  check_same_device(op, logits, labels);
  check_outputs(op, logits, loss, dlogits);
  GPPF_CHECK(p.label_smoothing >= 0.0f && p.label_smoothing <= 1.0f, op, ": label_smoothing ", p.label_smoothing,
             " must be in [0, 1]");
  if (launch_on_cuda(logits.device()))
    cuda::softmax_cross_entropy(p, logits, labels, loss, loss_mode, dlogits, s);
  else
    runtime::host_launch([p, logits, labels, loss, loss_mode, grad = optional_copy(dlogits)]() mutable {
      host::softmax_cross_entropy(p, logits, labels, loss, loss_mode, grad.get());
    });
}

void check_label_errors(const Stream& s, bool wait) {
  if (s.device.is_cuda()) cuda::check_label_errors(s, wait);
}

void centernet_focal_loss(const FocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                          GradMode loss_mode, Tensor* dlogits, const Stream& s) {
  constexpr const char* op = "centernet_focal_loss";
  check_input(op, "logits", logits);
  check_like(op, "target", target, logits);
  check_outputs(op, logits, loss, dlogits);
  GPPF_CHECK(p.alpha >= 0.0f && p.beta >= 0.0f, op, ": alpha ", p.alpha, " and beta ", p.beta, " must be >= 0");
  if (launch_on_cuda(logits.device()))
    cuda::centernet_focal_loss(p, logits, target, loss, loss_mode, dlogits, s);
  else
    runtime::host_launch([p, logits, target, loss, loss_mode, grad = optional_copy(dlogits)]() mutable {
      host::centernet_focal_loss(p, logits, target, loss, loss_mode, grad.get());
    });
}

void sigmoid_focal_loss(const SigmoidFocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                        GradMode loss_mode, Tensor* dlogits, const Stream& s) {
  constexpr const char* op = "sigmoid_focal_loss";
  check_input(op, "logits", logits);
  check_like(op, "target", target, logits);
  check_outputs(op, logits, loss, dlogits);
  GPPF_CHECK(p.gamma >= 0.0f, op, ": gamma ", p.gamma, " must be >= 0");
  if (launch_on_cuda(logits.device()))
    cuda::sigmoid_focal_loss(p, logits, target, loss, loss_mode, dlogits, s);
  else
    runtime::host_launch([p, logits, target, loss, loss_mode, grad = optional_copy(dlogits)]() mutable {
      host::sigmoid_focal_loss(p, logits, target, loss, loss_mode, grad.get());
    });
}

void smooth_l1_loss(const RegressionParams& p, const Tensor& pred, const Tensor& target, const Tensor& weight,
                    Tensor& loss, GradMode loss_mode, Tensor* dpred, const Stream& s) {
  constexpr const char* op = "smooth_l1_loss";
  check_input(op, "pred", pred);
  check_like(op, "target", target, pred);
  if (weight.defined()) check_like(op, "weight", weight, pred);
  check_outputs(op, pred, loss, dpred);
  GPPF_CHECK(p.beta >= 0.0f, op, ": beta ", p.beta, " must be >= 0");
  if (launch_on_cuda(pred.device()))
    cuda::smooth_l1_loss(p, pred, target, weight, loss, loss_mode, dpred, s);
  else
    runtime::host_launch([p, pred, target, weight, loss, loss_mode, grad = optional_copy(dpred)]() mutable {
      host::smooth_l1_loss(p, pred, target, weight, loss, loss_mode, grad.get());
    });
}

void l1_loss(const RegressionParams& p, const Tensor& pred, const Tensor& target, const Tensor& weight, Tensor& loss,
             GradMode loss_mode, Tensor* dpred, const Stream& s) {
  RegressionParams l1 = p;
  l1.beta = 0.0f;
  smooth_l1_loss(l1, pred, target, weight, loss, loss_mode, dpred, s);
}

std::vector<std::int64_t> topk_correct(const Tensor& logits, const Tensor& labels, int k_max) {
  constexpr const char* op = "topk_correct";
  GPPF_CHECK(!runtime::capturing(), op, ": returns values to the host; it cannot run inside a captured graph");
  GPPF_CHECK(logits.ndim() == 2, op, ": logits must be [N, C], got ", logits.desc());
  GPPF_CHECK(k_max >= 1, op, ": k_max ", k_max, " must be >= 1");
  check_shape(op, "labels", labels, {logits.dim(0)});
  check_dtype(op, "labels", labels, DType::I32);
  const std::int64_t n = logits.dim(0), c = logits.dim(1);
  // to_float_vector copies device tensors to the host and widens bf16.
  const std::vector<float> x = logits.to_float_vector();
  const Tensor labels_host = labels.device().is_cuda() ? labels.to(Device::host()) : labels;
  const std::int32_t* y = labels_host.data_as<std::int32_t>();
  std::vector<std::int64_t> correct(static_cast<std::size_t>(k_max), 0);
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int32_t label = y[r];
    GPPF_CHECK(label >= 0 && label < c, op, ": label ", label, " at row ", r, " of ", labels.desc(), " is outside [0, ",
               c, ")");
    const float* row = x.data() + r * c;
    const float v = row[label];
    // Rank of the label: classes strictly above it, and equal ones with a lower index. NaN never counts.
    if (std::isnan(v)) continue;
    std::int64_t rank = 0;
    for (std::int64_t j = 0; j < c && rank < k_max; ++j)
      if (row[j] > v || (row[j] == v && j < label)) ++rank;
    for (std::int64_t k = rank; k < k_max; ++k) ++correct[static_cast<std::size_t>(k)];
  }
  return correct;
}

}  // namespace gppf::kernels
