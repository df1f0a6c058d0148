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

// With several sets of affine parameters: segment s is normalised with gamma[affine[s]] and
// beta[affine[s]]. The backward resizes dgamma and dbeta to one vector per set, each overwritten
// with the sum over the segments of that set (zeros for a set no segment uses).
void batchnorm_fwd_train_segments(const BatchNormParams& p, std::int64_t channels,
                                  const std::vector<std::int64_t>& rows, const std::vector<std::size_t>& affine,
                                  const Vec& x, const std::vector<Vec>& gamma, const std::vector<Vec>& beta,
                                  std::vector<Vec>& running_mean, std::vector<Vec>& running_var, Vec& y, Vec& save_mean,
                                  Vec& save_invstd);
void batchnorm_bwd_segments(const BatchNormParams& p, std::int64_t channels, const std::vector<std::int64_t>& rows,
                            const std::vector<std::size_t>& affine, const Vec& x, const Vec& y, const Vec& dy,
                            const std::vector<Vec>& gamma, const Vec& save_mean, const Vec& save_invstd, Vec& dx,
                            std::vector<Vec>& dgamma, std::vector<Vec>& dbeta);

// The fused last stage of a task-batched lego layer and its gate gradients, rows of `row` values
// (channel = index % channels); part k uses gamma[k] and beta[k] (the parts' tensor pointers are not
// read; a gate_at or scale_at, host memory here, is). y resized to shortcut's size; out[slot] written for every part
// with slot >= 0.
void batchnorm_add_relu_segments(std::int64_t row, std::int64_t channels, const Vec& z, const Vec& mean,
                                 const Vec& invstd, const std::vector<NormPart>& parts, const std::vector<Vec>& gamma,
                                 const std::vector<Vec>& beta, const Vec& shortcut, Vec& y);
void segment_dot_bn(std::int64_t row, std::int64_t channels, const Vec& g, const Vec& z, const Vec& mean,
                    const Vec& invstd, const std::vector<NormPart>& parts, const std::vector<Vec>& gamma,
                    const std::vector<Vec>& beta, Vec& out);

}  // namespace gppf::kernels::ref
