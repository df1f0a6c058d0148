#pragma once
// Plain double-precision references of kernels/segments.hpp: the oracle of the tests. Tensors are
// flat row-major vectors: rows of `row` values for copy and dot, rows of `channels` values (one
// pixel) for batch norm, whose segments are given in such rows.
#include <cstdint>
#include <vector>

#include "kernels/segments.hpp"

namespace gppf::kernels::ref {

using Vec = std::vector<double>;

// dst updated in place.
void segment_copy(std::int64_t row, const Vec& src, Vec& dst, const std::vector<SegmentCopy>& segments, GradMode mode);
// out[slot] written for every segment.
void segment_dot(std::int64_t row, const Vec& a, const Vec& b, const std::vector<SegmentDot>& segments, Vec& out);
// rows[s]: segment s's rows, in order. running_mean/var[s] updated in place; save_mean and
// save_invstd resized to [S, channels].
void batchnorm_fwd_train_segments(const BatchNormParams& p, std::int64_t channels,
                                  const std::vector<std::int64_t>& rows, const Vec& x, const Vec& gamma,
                                  const Vec& beta, std::vector<Vec>& running_mean, std::vector<Vec>& running_var,
                                  Vec& y, Vec& save_mean, Vec& save_invstd);
// Overwrites dx, dgamma and dbeta (the sums over the segments). y is read only with p.relu.
void batchnorm_bwd_segments(const BatchNormParams& p, std::int64_t channels, const std::vector<std::int64_t>& rows,
                            const Vec& x, const Vec& y, const Vec& dy, const Vec& gamma, const Vec& save_mean,
                            const Vec& save_invstd, Vec& dx, Vec& dgamma, Vec& dbeta);

}  // namespace gppf::kernels::ref
