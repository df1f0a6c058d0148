#pragma once
// Training losses and the top-k metric. Formulas, reductions and edge cases: docs/kernels/loss.md.
//
// Common contract: `loss` is an f32 tensor [1] on the input's device, written (GradMode::Overwrite) or
// added to (GradMode::Accumulate) without any host synchronisation, so that several tasks can sum their
// weighted losses into one scalar. `scale` multiplies both the loss and the gradient. A gradient is
// written (overwritten, never accumulated) when its pointer is non-null; it has the input's shape and
// dtype, and may be the input itself (computed in place). Reductions are deterministic: a fixed summation order,
// independent of the thread count. Inputs are f32 on the host, f32 or bf16 on CUDA; targets and weights may be f32 or
// the input's dtype.
#include <cstdint>
#include <vector>

#include "kernels/common.hpp"

namespace gppf::kernels {

struct CrossEntropyParams {
  int ignore_index = -100;
  float label_smoothing = 0.0f;
  float scale = 1.0f;
};
// logits [..., C] (rows = numel / C), labels i32 [...] (one per row). Loss = scale * mean over the rows
// whose label != ignore_index of the label-smoothed softmax cross-entropy (PyTorch's); 0 with a zero
// gradient when every row is ignored. A label outside [0, C) that is not ignore_index throws on the
// host; on CUDA that row is treated as ignored and the error is reported (thrown) by the next
// softmax_cross_entropy on that device or by check_label_errors. Per-pixel CE: logits [N,H,W,C],
// labels [N,H,W].
void softmax_cross_entropy(const CrossEntropyParams& p, const Tensor& logits, const Tensor& labels, Tensor& loss,
                           GradMode loss_mode, Tensor* dlogits, const Stream& s = Stream::host());

// Throws gppf::Error when a CUDA softmax_cross_entropy on s's device has seen labels outside [0, C)
// since the last report (naming the first offending row and value); clears the record. `wait`: waits
// for `s` first; without, sees what the device has finished (all of it right after a sync).
// A no-op for the host (the host throws at once).
void check_label_errors(const Stream& s, bool wait = true);

struct FocalParams {
  float alpha = 2.0f;
  float beta = 4.0f;
  float scale = 1.0f;
};
// CenterNet's penalty-reduced pixel-wise focal loss on sigmoid heat maps: logits [N,H,W,C] (any shape),
// target of the same shape in [0,1]. Positives: target == 1; negatives: target < 1 (target > 1 is
// ignored). p = clamp(sigmoid(logit), 1e-4, 1 - 1e-4) exactly as CenterNet, and like torch.clamp the
// clamp passes no gradient. Loss = -scale / max(1, num_pos) * sum(pos: (1-p)^alpha log p;
// neg: (1-t)^beta p^alpha log(1-p)), the logs taken as log-sigmoids of the logit inside the clamp.
void centernet_focal_loss(const FocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                          GradMode loss_mode, Tensor* dlogits, const Stream& s = Stream::host());

struct SigmoidFocalParams {
  float alpha = 0.25f;  // < 0: no alpha weighting (torchvision's convention)
  float gamma = 2.0f;
  float scale = 1.0f;
};
// RetinaNet's sigmoid focal loss (torchvision.ops.sigmoid_focal_loss) with binary or soft targets:
// alpha_t * BCE(logit, t) * (1 - p_t)^gamma, p_t = p t + (1-p)(1-t), alpha_t = alpha t + (1-alpha)(1-t);
// summed and multiplied by scale / max(1, number of targets > 0.5). Any shape; target of the same shape.
void sigmoid_focal_loss(const SigmoidFocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                        GradMode loss_mode, Tensor* dlogits, const Stream& s = Stream::host());

struct RegressionParams {
  float beta = 1.0f;
  float scale = 1.0f;
};
// Smooth-L1 (PyTorch's: 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta; beta = 0 is plain L1) of
// d = pred - target, each element weighted by `weight` (same shape; undefined = all ones). Loss =
// scale * sum(w * l) / max(sum(w), 1e-6), where sum(w) is numel when weight is undefined.
void smooth_l1_loss(const RegressionParams& p, const Tensor& pred, const Tensor& target, const Tensor& weight,
                    Tensor& loss, GradMode loss_mode, Tensor* dpred, const Stream& s = Stream::host());
// smooth_l1_loss with beta = 0 (p.beta is ignored).
void l1_loss(const RegressionParams& p, const Tensor& pred, const Tensor& target, const Tensor& weight, Tensor& loss,
             GradMode loss_mode, Tensor* dpred, const Stream& s = Stream::host());

// Top-k correct counts: logits [N, C] (any device, f32 or bf16), labels i32 [N]. Element k-1 counts the
// rows whose label is among the k largest logits, for k = 1..k_max. Ties rank the lower class index
// first. Copies to the host (synchronous). A label outside [0, C) throws.
std::vector<std::int64_t> topk_correct(const Tensor& logits, const Tensor& labels, int k_max);

// Backend entry points; the functions above check arguments and dispatch here.
namespace host {
void softmax_cross_entropy(const CrossEntropyParams& p, const Tensor& logits, const Tensor& labels, Tensor& loss,
                           GradMode loss_mode, Tensor* dlogits);
void centernet_focal_loss(const FocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                          GradMode loss_mode, Tensor* dlogits);
void sigmoid_focal_loss(const SigmoidFocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                        GradMode loss_mode, Tensor* dlogits);
void smooth_l1_loss(const RegressionParams& p, const Tensor& pred, const Tensor& target, const Tensor& weight,
                    Tensor& loss, GradMode loss_mode, Tensor* dpred);
}  // namespace host
namespace cuda {
void softmax_cross_entropy(const CrossEntropyParams& p, const Tensor& logits, const Tensor& labels, Tensor& loss,
                           GradMode loss_mode, Tensor* dlogits, const Stream& s);
void check_label_errors(const Stream& s, bool wait);
void centernet_focal_loss(const FocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                          GradMode loss_mode, Tensor* dlogits, const Stream& s);
void sigmoid_focal_loss(const SigmoidFocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                        GradMode loss_mode, Tensor* dlogits, const Stream& s);
void smooth_l1_loss(const RegressionParams& p, const Tensor& pred, const Tensor& target, const Tensor& weight,
                    Tensor& loss, GradMode loss_mode, Tensor* dpred, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
