#include "kernels/functors/loss.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cast.hpp"
#include "kernels/loss.hpp"

namespace gppf::kernels::host {
namespace {

// Sum of f(i) for i in [0, n): fixed chunks summed in parallel, then the chunk sums in order, so the
// result has the same bits for any number of threads. `work` is the cost of all n items, in elements.
template <class F>
double deterministic_sum(std::int64_t n, std::int64_t chunk, std::int64_t work, const F& f) {
  const std::int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (work >= kParallelThreshold)
  for (std::int64_t c = 0; c < chunks; ++c) {
    double acc = 0.0;
    const std::int64_t end = std::min(n, (c + 1) * chunk);
    for (std::int64_t i = c * chunk; i < end; ++i) acc += f(i);
    partial[static_cast<std::size_t>(c)] = acc;
  }
  double total = 0.0;
  for (const double v : partial) total += v;
  return total;
}

constexpr std::int64_t kChunk = 4096;

void store_loss(Tensor& loss, GradMode mode, double value) {
  float* dst = loss.data_as<float>();
  dst[0] = mode == GradMode::Accumulate ? dst[0] + static_cast<float>(value) : static_cast<float>(value);
}

// Two passes: the normaliser (it scales every gradient), then the loss terms and the gradient.
template <class Op>
void run_elementwise(const Op& op, std::int64_t n, float scale, Tensor& loss, GradMode mode) {
  const double denom = Op::denom(deterministic_sum(n, kChunk, n, [&](std::int64_t i) { return op.norm(i); }));
  const float gscale = static_cast<float>(scale / denom);
  const double sum = deterministic_sum(n, kChunk, n, [&](std::int64_t i) { return op(i, gscale); });
  store_loss(loss, mode, scale * sum / denom);
}

}  // namespace

void softmax_cross_entropy(const CrossEntropyParams& p, const Tensor& logits, const Tensor& labels, Tensor& loss,
                           GradMode loss_mode, Tensor* dlogits) {
  const std::int64_t c = logits.dim(-1);
  const std::int64_t rows = logits.numel() / c;
  const float* x = logits.data_as<float>();
  const std::int32_t* y = labels.data_as<std::int32_t>();
  float* g = dlogits ? dlogits->data_as<float>() : nullptr;

  // Validate every label before writing anything; count the rows that take part.
  std::int64_t valid = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (y[r] == p.ignore_index) continue;
    GPPF_CHECK(y[r] >= 0 && y[r] < c, "softmax_cross_entropy: label ", y[r], " at row ", r, " of labels ",
               labels.desc(), " is outside [0, ", c, ") and is not ignore_index (", p.ignore_index, ")");
    ++valid;
  }
  const double denom = static_cast<double>(std::max<std::int64_t>(valid, 1));
  const float gscale = static_cast<float>(p.scale / denom);
  const float eps = p.label_smoothing;
  const float eps_c = eps / static_cast<float>(c);

  // The row's loss, -sum_c q_c log softmax_c with q = (1 - eps) onehot + eps / C, from the max-shifted
  // logits: lse' - (1 - eps)(x_y - m) - eps/C sum_c (x_c - m), lse' = log sum_c exp(x_c - m).
  const auto row_loss = [&](std::int64_t r) -> double {
    const float* xr = x + r * c;
    float* gr = g ? g + r * c : nullptr;
    const std::int32_t label = y[r];
    if (label == p.ignore_index) {
      if (gr) std::fill(gr, gr + c, 0.0f);
      return 0.0;
    }
    float m = xr[0];
    for (std::int64_t j = 1; j < c; ++j) m = std::max(m, xr[j]);
    const float x_label = xr[label];  // read before the gradient, which may overwrite the logits
    float se = 0.0f, sd = 0.0f;
    for (std::int64_t j = 0; j < c; ++j) {
      const float d = xr[j] - m;
      const float e = std::exp(d);
      if (gr) gr[j] = e;  // kept for the gradient: saves a second exp per class
      se += e;
      sd += d;
    }
    if (gr) {
      const float inv = 1.0f / se;
      for (std::int64_t j = 0; j < c; ++j) gr[j] = gscale * (gr[j] * inv - eps_c - (j == label ? 1.0f - eps : 0.0f));
    }
    return static_cast<double>(std::log(se) - (1.0f - eps) * (x_label - m) - eps_c * sd);
  };
  const std::int64_t chunk = std::max<std::int64_t>(1, kChunk / c);
  const double sum = deterministic_sum(rows, chunk, rows * c, row_loss);
  store_loss(loss, loss_mode, p.scale * sum / denom);
}

void centernet_focal_loss(const FocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                          GradMode loss_mode, Tensor* dlogits) {
  const CenterNetFocalOp op{logits.data(),
                            target.data(),
                            dlogits ? dlogits->data() : nullptr,
                            FloatKind::F32,
                            float_kind("centernet_focal_loss", target.dtype()),
                            FloatKind::F32,
                            p.alpha,
                            p.beta};
  run_elementwise(op, logits.numel(), p.scale, loss, loss_mode);
}

void sigmoid_focal_loss(const SigmoidFocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                        GradMode loss_mode, Tensor* dlogits) {
  const SigmoidFocalOp op{logits.data(),
                          target.data(),
                          dlogits ? dlogits->data() : nullptr,
                          FloatKind::F32,
                          float_kind("sigmoid_focal_loss", target.dtype()),
                          FloatKind::F32,
                          p.alpha,
                          p.gamma};
  run_elementwise(op, logits.numel(), p.scale, loss, loss_mode);
}

void smooth_l1_loss(const RegressionParams& p, const Tensor& pred, const Tensor& target, const Tensor& weight,
                    Tensor& loss, GradMode loss_mode, Tensor* dpred) {
  const SmoothL1Op op{pred.data(),
                      target.data(),
                      weight.defined() ? weight.data() : nullptr,
                      dpred ? dpred->data() : nullptr,
                      FloatKind::F32,
                      float_kind("smooth_l1_loss", target.dtype()),
                      weight.defined() ? float_kind("smooth_l1_loss", weight.dtype()) : FloatKind::F32,
                      FloatKind::F32,
                      p.beta};
  run_elementwise(op, pred.numel(), p.scale, loss, loss_mode);
}

}  // namespace gppf::kernels::host
