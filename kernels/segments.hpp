#pragma once
// Ops over the samples of several tasks batched along dim 0 (the task-batched SIMT step, src/nn/
// lego_strategy_batched.cpp): samples of tasks that picked the same lego run through it as one batch,
// so the lego's batch is a gather of row ranges of the layer's batch, its gated output a scatter-add
// back, its batch norm keeps each task's statistics apart, and each task's gate gradient is a dot
// over that task's rows. A few launches each, whatever the number of tasks: on CUDA, per kMaxSegments
// segments, segment_copy launches 1 kernel, segment_dot 2 (partial sums, fold) and the batch norms 3
// (partial sums, per-segment statistics, element-wise pass); every device counts what CUDA launches
// (core/counters.hpp). On the host each entry point hands its work to runtime::host_launch (core/
// graph.hpp) holding by value what it reads (tensors, segment lists, the tensors a segment points to).
//
// A tensor is seen as [N, row]: dim 0 the samples, the rest one row of row = numel / N values.
#include <optional>
#include <vector>

#include "kernels/batchnorm.hpp"
#include "kernels/common.hpp"

namespace gppf::kernels {

// Segments handled by one CUDA launch (they ride in the kernel's parameters).
inline constexpr int kMaxSegments = 32;

// A range of rows copied from src to dst.
struct SegmentCopy {
  std::int64_t src = 0, dst = 0, count = 0;  // in rows (samples); count may be 0
  float scale = 1.0f;
  // Non-null: the scale is read from this f32 in memory when the copy runs (host memory for host
  // tensors, device memory on CUDA; e.g. a gate of the step's route table, nn::RouteTable), instead
  // of `scale`: a captured graph (core/graph.hpp) replays with the value then in memory. The caller
  // keeps that memory alive.
  const float* scale_at = nullptr;
};

// For every segment: dst[dst + i] = (mode == Accumulate ? dst[dst + i] : 0) + scale * src[src + i],
// i < count (scale: *scale_at when set). src and dst: same dtype (f32 or bf16; math in f32), same device, same row
// size; the destination ranges must not overlap. Rows of dst outside every segment are left alone; nothing is launched
// when no segment has rows.
void segment_copy(const Tensor& src, Tensor& dst, const std::vector<SegmentCopy>& segments, GradMode mode,
                  const Stream& s = Stream::host());

// Rows of a and b dotted into one output slot.
struct SegmentDot {
  std::int64_t a = 0, b = 0, count = 0;  // in rows
  std::int64_t slot = 0;                 // index into out
};

// For every segment: out[slot] = sum_{i < count} a[a + i] . b[b + i] (f32 out, written, 0 for a
// count of 0; slots distinct, indexing out's values). a and b: same dtype (f32 or bf16), same row
// size. Deterministic (a fixed reduction order, independent of the thread count), accumulated in
// double.
void segment_dot(const Tensor& a, const Tensor& b, const std::vector<SegmentDot>& segments, Tensor& out,
                 const Stream& s = Stream::host());

// One task's samples in a batch-norm input: consecutive segments cover dim 0 in order.
struct BatchNormSegment {
  std::int64_t count = 0;          // samples (dim 0), > 0
  Tensor* running_mean = nullptr;  // the task's running statistics, f32 [C] (forward only)
  Tensor* running_var = nullptr;
  const Tensor* gamma = nullptr;  // this segment's affine parameters, f32 [C]; null: the call's gamma / beta
  const Tensor* beta = nullptr;
  Tensor* dgamma = nullptr;  // backward: where this segment's affine gradients go; null: the call's
  Tensor* dbeta = nullptr;
  // What the first segment to write its own targets does (each lego's parameters have their own
  // Parameter::take_grad_mode); unset: the call's param_mode.
  std::optional<GradMode> target_mode{};
};

// Training batch norm with statistics per segment: each segment is normalised by its own batch
// statistics and updates its own running statistics, exactly as batchnorm_fwd_train on that
// segment alone with its gamma and beta (its own, else the call's). save_mean, save_invstd: f32
// [S, C], row s for segment s. With p.relu, y = relu(bn(x)). Each segment needs at least 2 values
// per channel, and running statistics of its own. The call's gamma (beta) may be undefined when
// every segment has its own.
void batchnorm_fwd_train_segments(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                  const std::vector<BatchNormSegment>& segments, Tensor& y, Tensor& save_mean,
                                  Tensor& save_invstd, const Stream& s = Stream::host());
// y may be undefined: statistics only (save_mean, save_invstd and the running statistics), for a
// caller that applies them in a pass of its own (batchnorm_add_relu_segments); one launch fewer.
//
// Its backward: dx as batchnorm_bwd on each segment with its gamma. Each segment's dgamma/dbeta go
// to its own targets, else the call's: exactly batchnorm_bwd on each segment in order, the first
// segment to write a target taking its mode (target_mode for its own targets, else param_mode) and
// later ones adding. Targets are told apart by
// address: two are the same tensor or do not overlap, and no tensor is both a dgamma and a dbeta.
// Running statistics are not read. The call's gamma, dgamma, dbeta may be undefined when every
// segment has its own. With no segments (N = 0) nothing is launched and nothing is written.
void batchnorm_bwd_segments(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy,
                            const Tensor& gamma, const std::vector<BatchNormSegment>& segments, const Tensor& save_mean,
                            const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode,
                            const Stream& s = Stream::host());

// One lego's rows of one task in a task-batched layer's last stage: rows [src, src + count) of the
// stacked batch-norm input z, normalised by row `stats` of the per-segment statistics and the lego's
// gamma and beta (f32 [C]), times `gate`, belong to rows [dst, dst + count) of the layer's output.
// `slot`: where segment_dot_bn writes the gate's gradient (< 0: none, e.g. an always-on lego).
struct NormPart {
  std::int64_t src = 0, dst = 0, count = 0;  // in rows (samples)
  std::int64_t stats = 0;
  const Tensor* gamma = nullptr;
  const Tensor* beta = nullptr;
  float gate = 1.0f;
  std::int64_t slot = -1;
  // Non-null: the gate is read from this f32 in memory when the pass runs (as SegmentCopy::scale_at),
  // instead of `gate`.
  const float* gate_at = nullptr;
};

// The last batch norm, the gated sum of the legos and the residual ReLU in one pass (DESIGN.md, "Where
// the speed must come from"): for every row n of y,
//   y[n] = relu(shortcut[n] + sum over the parts covering n, in list order, of
//               gate * ((z[src + n - dst] - mean[stats]) * (gamma * invstd[stats]) + beta)),
// relu(shortcut[n]) where no part covers n. z: [R, ..., C]; shortcut and y: [N, ..., C] with z's row
// size; f32 or bf16 (math in f32: the terms are added unrounded); mean, invstd: f32 [S, C] as
// batchnorm_fwd_train_segments writes them. At most kMaxSegments parts (one launch, which reads z
// once and writes y once instead of writing the normalised z and adding it part by part). Parts with
// the same dst rows are distinct route entries; y may be shortcut itself. A part's `gate` is checked
// finite; a gate read from memory (gate_at) is not (it may be on the device).
void batchnorm_add_relu_segments(const Tensor& z, const Tensor& mean, const Tensor& invstd,
                                 const std::vector<NormPart>& parts, const Tensor& shortcut, Tensor& y,
                                 const Stream& s = Stream::host());

// The gates' gradients of that pass from the gradient g of its pre-ReLU sum, without the normalised
// z: out[slot] = sum over the part's rows of g[dst + i] . ((z[src + i] - mean[stats]) *
// (gamma * invstd[stats]) + beta) for every part with slot >= 0 (slots distinct; f32 out). Summed as
// segment_dot sums (fixed order, double), so the f32 result is segment_dot's over the normalised z.
void segment_dot_bn(const Tensor& g, const Tensor& z, const Tensor& mean, const Tensor& invstd,
                    const std::vector<NormPart>& parts, Tensor& out, const Stream& s = Stream::host());

// For the backends: per segment, whether it overwrites its dgamma target (`dbeta` false) or its
// dbeta target (`dbeta` true), its own or the call's: it is the first (in order) to write it, and
// the target's mode is Overwrite.
std::vector<bool> bn_overwrites(const std::vector<BatchNormSegment>& segments, const Tensor& call, bool dbeta,
                                GradMode param_mode);

// Backends, called after the checks above; `accumulate` is GradMode::Accumulate. The CUDA ones return
// the number of kernels they launched (the entry points count them, core/counters.hpp).
namespace host {
void segment_copy(const Tensor& src, Tensor& dst, const std::vector<SegmentCopy>& segments, bool accumulate);
void segment_dot(const Tensor& a, const Tensor& b, const std::vector<SegmentDot>& segments, Tensor& out);
void batchnorm_fwd_train_segments(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                  const std::vector<BatchNormSegment>& segments, Tensor& y, Tensor& save_mean,
                                  Tensor& save_invstd);
void batchnorm_bwd_segments(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy,
                            const Tensor& gamma, const std::vector<BatchNormSegment>& segments, const Tensor& save_mean,
                            const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode);
void batchnorm_add_relu_segments(const Tensor& z, const Tensor& mean, const Tensor& invstd,
                                 const std::vector<NormPart>& parts, const Tensor& shortcut, Tensor& y);
void segment_dot_bn(const Tensor& g, const Tensor& z, const Tensor& mean, const Tensor& invstd,
                    const std::vector<NormPart>& parts, Tensor& out);
}  // namespace host
namespace cuda {
std::int64_t segment_copy(const Tensor& src, Tensor& dst, const std::vector<SegmentCopy>& segments, bool accumulate,
                          const Stream& s);
std::int64_t segment_dot(const Tensor& a, const Tensor& b, const std::vector<SegmentDot>& segments, Tensor& out,
                         const Stream& s);
std::int64_t batchnorm_fwd_train_segments(const BatchNormParams& p, const Tensor& x, const Tensor& gamma,
                                          const Tensor& beta, const std::vector<BatchNormSegment>& segments, Tensor& y,
                                          Tensor& save_mean, Tensor& save_invstd, const Stream& s);
std::int64_t batchnorm_bwd_segments(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy,
                                    const Tensor& gamma, const std::vector<BatchNormSegment>& segments,
                                    const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma,
                                    Tensor& dbeta, GradMode param_mode, const Stream& s);
std::int64_t batchnorm_add_relu_segments(const Tensor& z, const Tensor& mean, const Tensor& invstd,
                                         const std::vector<NormPart>& parts, const Tensor& shortcut, Tensor& y,
                                         const Stream& s);
std::int64_t segment_dot_bn(const Tensor& g, const Tensor& z, const Tensor& mean, const Tensor& invstd,
                            const std::vector<NormPart>& parts, Tensor& out, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
