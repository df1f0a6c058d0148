#pragma once
// Plain double-precision references of kernels/loss.hpp, the oracles of the tests. Same params structs;
// each returns the loss and fills the gradient when asked (sized like the input).
#include <cstdint>
#include <vector>

#include "kernels/loss.hpp"

namespace gppf::kernels::ref {

// logits: rows x classes, row-major; labels: one per row. Throws on a label outside [0, classes) that
// is not ignore_index.
double softmax_cross_entropy(const CrossEntropyParams& p, const std::vector<double>& logits,
                             const std::vector<std::int32_t>& labels, std::int64_t classes,
                             std::vector<double>* dlogits = nullptr);
double centernet_focal_loss(const FocalParams& p, const std::vector<double>& logits, const std::vector<double>& target,
                            std::vector<double>* dlogits = nullptr);
double sigmoid_focal_loss(const SigmoidFocalParams& p, const std::vector<double>& logits,
                          const std::vector<double>& target, std::vector<double>* dlogits = nullptr);
// weight == nullptr: all ones.
double smooth_l1_loss(const RegressionParams& p, const std::vector<double>& pred, const std::vector<double>& target,
                      const std::vector<double>* weight, std::vector<double>* dpred = nullptr);
std::vector<std::int64_t> topk_correct(const std::vector<double>& logits, const std::vector<std::int32_t>& labels,
                                       std::int64_t classes, int k_max);

}  // namespace gppf::kernels::ref
