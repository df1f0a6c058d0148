#include "kernels/ref/segments.hpp"

#include "core/error.hpp"
#include "kernels/ref/batchnorm.hpp"

namespace gppf::kernels::ref {
namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// Values [begin, begin + n) of v.
Vec slice(const Vec& v, std::int64_t begin, std::int64_t n) { return Vec(v.begin() + begin, v.begin() + begin + n); }

void put(Vec& v, std::int64_t begin, const Vec& part) {
  for (std::size_t i = 0; i < part.size(); ++i) v[at(begin) + i] = part[i];
}

std::int64_t total_values(const char* op, std::int64_t channels, const std::vector<std::int64_t>& rows, const Vec& x) {
  std::int64_t n = 0;
  for (std::int64_t r : rows) n += r * channels;
  GPPF_CHECK(n == static_cast<std::int64_t>(x.size()), op, ": segments of ", n, " values for ", x.size());
  return n;
}

// One set of affine parameters per segment, among `sets`.
void check_affine(const char* op, const std::vector<std::int64_t>& rows, const std::vector<std::size_t>& affine,
                  std::size_t sets) {
  GPPF_CHECK(affine.size() == rows.size(), op, ": ", affine.size(), " affine indices for ", rows.size(), " segments");
  for (std::size_t s = 0; s < affine.size(); ++s)
    GPPF_CHECK(affine[s] < sets, op, ": segment ", s, " uses affine set ", affine[s], " of ", sets);
}

}  // namespace

void segment_copy(std::int64_t row, const Vec& src, Vec& dst, const std::vector<SegmentCopy>& segments, GradMode mode) {
  for (const SegmentCopy& g : segments)
    for (std::int64_t i = 0; i < g.count * row; ++i) {
      double& d = dst[at(g.dst * row + i)];
      d = (mode == GradMode::Accumulate ? d : 0.0) +
          double(g.scale_at ? *g.scale_at : g.scale) * src[at(g.src * row + i)];
    }
}

void segment_dot(std::int64_t row, const Vec& a, const Vec& b, const std::vector<SegmentDot>& segments, Vec& out) {
  for (const SegmentDot& g : segments) {
    double s = 0.0;
    for (std::int64_t i = 0; i < g.count * row; ++i) s += a[at(g.a * row + i)] * b[at(g.b * row + i)];
    out[at(g.slot)] = s;
  }
}

void batchnorm_fwd_train_segments(const BatchNormParams& p, std::int64_t channels,
                                  const std::vector<std::int64_t>& rows, const std::vector<std::size_t>& affine,
                                  const Vec& x, const std::vector<Vec>& gamma, const std::vector<Vec>& beta,
                                  std::vector<Vec>& running_mean, std::vector<Vec>& running_var, Vec& y, Vec& save_mean,
                                  Vec& save_invstd) {
  constexpr const char* op = "ref::batchnorm_fwd_train_segments";
  total_values(op, channels, rows, x);
  check_affine(op, rows, affine, gamma.size());
  GPPF_CHECK(beta.size() == gamma.size(), op, ": ", gamma.size(), " gammas and ", beta.size(), " betas");
  y.assign(x.size(), 0.0);
  save_mean.assign(rows.size() * at(channels), 0.0);
  save_invstd.assign(rows.size() * at(channels), 0.0);
  std::int64_t begin = 0;
  for (std::size_t s = 0; s < rows.size(); ++s) {
    const std::int64_t n = rows[s] * channels;
    Vec ys, sm, si;
    batchnorm_fwd_train(p, channels, slice(x, begin, n), gamma[affine[s]], beta[affine[s]], running_mean[s],
                        running_var[s], ys, sm, si);
    put(y, begin, ys);
    put(save_mean, static_cast<std::int64_t>(s) * channels, sm);
    put(save_invstd, static_cast<std::int64_t>(s) * channels, si);
    begin += n;
  }
}

void batchnorm_bwd_segments(const BatchNormParams& p, std::int64_t channels, const std::vector<std::int64_t>& rows,
                            const std::vector<std::size_t>& affine, const Vec& x, const Vec& y, const Vec& dy,
                            const std::vector<Vec>& gamma, const Vec& save_mean, const Vec& save_invstd, Vec& dx,
                            std::vector<Vec>& dgamma, std::vector<Vec>& dbeta) {
  constexpr const char* op = "ref::batchnorm_bwd_segments";
  total_values(op, channels, rows, x);
  check_affine(op, rows, affine, gamma.size());
  dx.assign(x.size(), 0.0);
  dgamma.assign(gamma.size(), Vec(at(channels), 0.0));
  dbeta.assign(gamma.size(), Vec(at(channels), 0.0));
  std::int64_t begin = 0;
  for (std::size_t s = 0; s < rows.size(); ++s) {
    const std::int64_t n = rows[s] * channels, first = static_cast<std::int64_t>(s) * channels;
    Vec dxs, dg, db;
    batchnorm_bwd(p, channels, slice(x, begin, n), p.relu ? slice(y, begin, n) : Vec(), slice(dy, begin, n),
                  gamma[affine[s]], slice(save_mean, first, channels), slice(save_invstd, first, channels), dxs, dg,
                  db);
    put(dx, begin, dxs);
    for (std::size_t c = 0; c < at(channels); ++c) {
      dgamma[affine[s]][c] += dg[c];
      dbeta[affine[s]][c] += db[c];
    }
    begin += n;
  }
}

void batchnorm_fwd_train_segments(const BatchNormParams& p, std::int64_t channels,
                                  const std::vector<std::int64_t>& rows, const Vec& x, const Vec& gamma,
                                  const Vec& beta, std::vector<Vec>& running_mean, std::vector<Vec>& running_var,
                                  Vec& y, Vec& save_mean, Vec& save_invstd) {
  batchnorm_fwd_train_segments(p, channels, rows, std::vector<std::size_t>(rows.size(), 0), x, {gamma}, {beta},
                               running_mean, running_var, y, save_mean, save_invstd);
}

void batchnorm_bwd_segments(const BatchNormParams& p, std::int64_t channels, const std::vector<std::int64_t>& rows,
                            const Vec& x, const Vec& y, const Vec& dy, const Vec& gamma, const Vec& save_mean,
                            const Vec& save_invstd, Vec& dx, Vec& dgamma, Vec& dbeta) {
  std::vector<Vec> dg, db;
  batchnorm_bwd_segments(p, channels, rows, std::vector<std::size_t>(rows.size(), 0), x, y, dy, {gamma}, save_mean,
                         save_invstd, dx, dg, db);
  dgamma = dg[0];
  dbeta = db[0];
}

namespace {

// Part k's normalised value of element i of its rows.
double normalised(std::int64_t row, std::int64_t channels, const Vec& z, const Vec& mean, const Vec& invstd,
                  const NormPart& g, const Vec& gamma, const Vec& beta, std::int64_t i) {
  const std::int64_t c = i % channels, s = g.stats * channels + c;
  return (z[at(g.src * row + i)] - mean[at(s)]) * invstd[at(s)] * gamma[at(c)] + beta[at(c)];
}

}  // namespace

void batchnorm_add_relu_segments(std::int64_t row, std::int64_t channels, const Vec& z, const Vec& mean,
                                 const Vec& invstd, const std::vector<NormPart>& parts, const std::vector<Vec>& gamma,
                                 const std::vector<Vec>& beta, const Vec& shortcut, Vec& y) {
  y = shortcut;
  for (std::size_t k = 0; k < parts.size(); ++k)
    for (std::int64_t i = 0; i < parts[k].count * row; ++i)
      y[at(parts[k].dst * row + i)] += double(parts[k].gate_at ? *parts[k].gate_at : parts[k].gate) *
                                       normalised(row, channels, z, mean, invstd, parts[k], gamma[k], beta[k], i);
  for (double& v : y) v = v < 0.0 ? 0.0 : v;
}

void segment_dot_bn(std::int64_t row, std::int64_t channels, const Vec& g, const Vec& z, const Vec& mean,
                    const Vec& invstd, const std::vector<NormPart>& parts, const std::vector<Vec>& gamma,
                    const std::vector<Vec>& beta, Vec& out) {
  for (std::size_t k = 0; k < parts.size(); ++k) {
    if (parts[k].slot < 0) continue;
    double s = 0.0;
    for (std::int64_t i = 0; i < parts[k].count * row; ++i)
      s += g[at(parts[k].dst * row + i)] * normalised(row, channels, z, mean, invstd, parts[k], gamma[k], beta[k], i);
    out[at(parts[k].slot)] = s;
  }
}

}  // namespace gppf::kernels::ref
