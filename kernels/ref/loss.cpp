#include "kernels/ref/loss.hpp"

#include <algorithm>
#include <cmath>

namespace gppf::kernels::ref {
namespace {

// log(sigmoid(x)) without overflow.
double log_sigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }
double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }

void resize(std::vector<double>* grad, std::size_t n) {
  if (grad) grad->assign(n, 0.0);
}

}  // namespace

double softmax_cross_entropy(const CrossEntropyParams& p, const std::vector<double>& logits,
                             const std::vector<std::int32_t>& labels, std::int64_t classes,
                             std::vector<double>* dlogits) {
  const auto rows = static_cast<std::int64_t>(labels.size());
  GPPF_CHECK(classes >= 1 && static_cast<std::int64_t>(logits.size()) == rows * classes,
             "ref::softmax_cross_entropy: ", logits.size(), " logits for ", rows, " rows of ", classes, " classes");
  std::int64_t valid = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int32_t y = labels[static_cast<std::size_t>(r)];
    if (y == p.ignore_index) continue;
    GPPF_CHECK(y >= 0 && y < classes, "ref::softmax_cross_entropy: label ", y, " at row ", r, " is outside [0, ",
               classes, ")");
    ++valid;
  }
  resize(dlogits, logits.size());
  const double denom = static_cast<double>(std::max<std::int64_t>(valid, 1));
  const double eps = p.label_smoothing;
  double sum = 0.0;
  std::vector<double> log_softmax(static_cast<std::size_t>(classes));
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int32_t y = labels[static_cast<std::size_t>(r)];
    if (y == p.ignore_index) continue;
    const double* x = logits.data() + r * classes;
    const double m = *std::max_element(x, x + classes);
    double se = 0.0;
    for (std::int64_t c = 0; c < classes; ++c) se += std::exp(x[c] - m);
    const double lse = m + std::log(se);
    for (std::int64_t c = 0; c < classes; ++c) {
      const double q = (c == y ? 1.0 - eps : 0.0) + eps / static_cast<double>(classes);
      const double ls = x[c] - lse;
      sum -= q * ls;
      if (dlogits) (*dlogits)[static_cast<std::size_t>(r * classes + c)] = p.scale / denom * (std::exp(ls) - q);
    }
  }
  return p.scale * sum / denom;
}

double centernet_focal_loss(const FocalParams& p, const std::vector<double>& logits, const std::vector<double>& target,
                            std::vector<double>* dlogits) {
  GPPF_CHECK(logits.size() == target.size(), "ref::centernet_focal_loss: sizes differ");
  resize(dlogits, logits.size());
  // The clamp bounds as CenterNet has them in float.
  const double lo = static_cast<double>(1e-4f), hi = static_cast<double>(1.0f - 1e-4f);
  const double a = p.alpha, b = p.beta;
  double num_pos = 0.0, sum = 0.0;
  for (const double t : target) num_pos += t == 1.0 ? 1.0 : 0.0;
  const double denom = std::max(num_pos, 1.0);
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const double s = sigmoid(logits[i]), t = target[i];
    const double pr = std::clamp(s, lo, hi);
    const double dpdx = (s >= lo && s <= hi) ? s * (1.0 - s) : 0.0;
    double l = 0.0, dldp = 0.0;
    if (t == 1.0) {
      l = -std::pow(1.0 - pr, a) * std::log(pr);
      dldp = a * std::pow(1.0 - pr, a - 1.0) * std::log(pr) - std::pow(1.0 - pr, a) / pr;
    } else if (t < 1.0) {
      const double w = std::pow(1.0 - t, b);
      l = -w * std::pow(pr, a) * std::log1p(-pr);
      dldp = -w * (a * std::pow(pr, a - 1.0) * std::log1p(-pr) - std::pow(pr, a) / (1.0 - pr));
    }
    sum += l;
    if (dlogits) (*dlogits)[i] = p.scale / denom * dldp * dpdx;
  }
  return p.scale * sum / denom;
}

double sigmoid_focal_loss(const SigmoidFocalParams& p, const std::vector<double>& logits,
                          const std::vector<double>& target, std::vector<double>* dlogits) {
  GPPF_CHECK(logits.size() == target.size(), "ref::sigmoid_focal_loss: sizes differ");
  resize(dlogits, logits.size());
  double count = 0.0, sum = 0.0;
  for (const double t : target) count += t > 0.5 ? 1.0 : 0.0;
  const double denom = std::max(count, 1.0);
  const double g = p.gamma;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const double x = logits[i], t = target[i];
    const double pr = sigmoid(x), qr = sigmoid(-x);
    const double ce = -(t * log_sigmoid(x) + (1.0 - t) * log_sigmoid(-x));
    const double m = t * qr + (1.0 - t) * pr;  // 1 - p_t
    const double at = p.alpha >= 0 ? p.alpha * t + (1.0 - p.alpha) * (1.0 - t) : 1.0;
    sum += at * ce * std::pow(m, g);
    if (dlogits) {
      const double dm = (1.0 - 2.0 * t) * pr * qr;
      const double dmg = m > 0 ? g * std::pow(m, g - 1.0) * dm : 0.0;
      (*dlogits)[i] = p.scale / denom * at * ((pr - t) * std::pow(m, g) + ce * dmg);
    }
  }
  return p.scale * sum / denom;
}

double smooth_l1_loss(const RegressionParams& p, const std::vector<double>& pred, const std::vector<double>& target,
                      const std::vector<double>* weight, std::vector<double>* dpred) {
  GPPF_CHECK(pred.size() == target.size() && (!weight || weight->size() == pred.size()),
             "ref::smooth_l1_loss: sizes differ");
  resize(dpred, pred.size());
  double wsum = 0.0, sum = 0.0;
  for (std::size_t i = 0; i < pred.size(); ++i) wsum += weight ? (*weight)[i] : 1.0;
  const double denom = std::max(wsum, 1e-6);
  const double beta = p.beta;
  for (std::size_t i = 0; i < pred.size(); ++i) {
    const double d = pred[i] - target[i], w = weight ? (*weight)[i] : 1.0;
    const bool quadratic = std::abs(d) < beta;
    sum += w * (quadratic ? 0.5 * d * d / beta : std::abs(d) - 0.5 * beta);
    if (dpred) (*dpred)[i] = p.scale / denom * w * (quadratic ? d / beta : (d > 0) - (d < 0));
  }
  return p.scale * sum / denom;
}

std::vector<std::int64_t> topk_correct(const std::vector<double>& logits, const std::vector<std::int32_t>& labels,
                                       std::int64_t classes, int k_max) {
  std::vector<std::int64_t> correct(static_cast<std::size_t>(k_max), 0);
  for (std::size_t r = 0; r < labels.size(); ++r) {
    const std::int32_t y = labels[r];
    GPPF_CHECK(y >= 0 && y < classes, "ref::topk_correct: label ", y, " at row ", r, " is outside [0, ", classes, ")");
    // Sort the class indices by (logit descending, index ascending); the label's position is its rank.
    std::vector<std::int64_t> order(static_cast<std::size_t>(classes));
    for (std::int64_t c = 0; c < classes; ++c) order[static_cast<std::size_t>(c)] = c;
    const double* x = logits.data() + static_cast<std::int64_t>(r) * classes;
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t i, std::int64_t j) { return x[i] > x[j]; });
    const auto rank = std::find(order.begin(), order.end(), y) - order.begin();
    for (auto k = rank; k < k_max; ++k) ++correct[static_cast<std::size_t>(k)];
  }
  return correct;
}

}  // namespace gppf::kernels::ref
