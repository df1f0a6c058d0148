// Host segment ops. Copy and dot walk the segments' rows as one flat range of fixed blocks, so one
// OpenMP loop covers every segment whatever their sizes; the dot's blocks are kDotChunk elements of
// one segment, summed in double in a fixed order (as host::dot). Batch norm runs host::batchnorm_* on
// each segment's rows, so a segment gives bit for bit what batchnorm_fwd_train gives it alone.
#include "kernels/segments.hpp"

#include <algorithm>
#include <vector>

#include "kernels/functors/elementwise.hpp"
#include "kernels/functors/norm_add.hpp"

namespace gppf::kernels::host {
namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

constexpr std::int64_t kCopyBlock = 16384;

std::int64_t row_size(const Tensor& t) { return t.dim(0) ? t.numel() / t.dim(0) : 0; }

template <class T, bool kAccumulate>
void copy_range(const T* src, T* dst, std::int64_t n, float scale) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = scale * to_f32(src[i]);
    dst[i] = from_f32<T>(kAccumulate ? to_f32(dst[i]) + v : v);
  }
}

template <class T, bool kAccumulate>
void copy_segments(const Tensor& src, Tensor& dst, const std::vector<SegmentCopy>& segments) {
  const std::int64_t row = row_size(src);
  std::vector<SegmentCopy> live;
  std::vector<std::int64_t> begin{0};  // element offsets of the live segments in the flat range
  for (const SegmentCopy& g : segments)
    if (g.count > 0) {
      live.push_back(g);
      begin.push_back(begin.back() + g.count * row);
    }
  const T* s = data_ptr<const T>(src);
  T* d = data_ptr<T>(dst);
  const std::int64_t total = begin.back(), blocks = (total + kCopyBlock - 1) / kCopyBlock;
#pragma omp parallel for schedule(static) if (total >= kParallelThreshold)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    std::int64_t i = blk * kCopyBlock;
    const std::int64_t end = std::min(total, i + kCopyBlock);
    auto k = static_cast<std::size_t>(std::upper_bound(begin.begin(), begin.end(), i) - begin.begin() - 1);
    for (; i < end; ++k) {
      const std::int64_t off = i - begin[k], n = std::min(end, begin[k + 1]) - i;
      const SegmentCopy& g = live[k];
      copy_range<T, kAccumulate>(s + g.src * row + off, d + g.dst * row + off, n, g.scale_at ? *g.scale_at : g.scale);
      i += n;
    }
  }
}

// sum(a[i] * b[i]) over n <= kDotChunk elements: four accumulators (a fixed order) so that the adds
// pipeline.
template <class T>
double chunk_dot(const T* a, const T* b, std::int64_t n) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) s[k] += static_cast<double>(to_f32(a[i + k])) * to_f32(b[i + k]);
  for (; i < n; ++i) s[0] += static_cast<double>(to_f32(a[i])) * to_f32(b[i]);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// Segment dots in kDotChunk-element chunks of one segment each, summed in double in a fixed order:
// segments[k] gives the rows and slot, `chunk(k, lo, n)` the dot of elements [lo, lo + n) of segment k.
template <class Chunk>
void chunked_dots(const std::vector<SegmentDot>& segments, std::int64_t row, Tensor& out, const Chunk& chunk) {
  std::vector<std::int64_t> first{0};  // segment k's chunks: [first[k], first[k + 1])
  for (const SegmentDot& g : segments) first.push_back(first.back() + (g.count * row + kDotChunk - 1) / kDotChunk);
  const std::int64_t chunks = first.back();
  std::vector<double> partial(at(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (std::int64_t c = 0; c < chunks; ++c) {
    const auto k = static_cast<std::size_t>(std::upper_bound(first.begin(), first.end(), c) - first.begin() - 1);
    const std::int64_t lo = (c - first[k]) * kDotChunk, n = std::min(kDotChunk, segments[k].count * row - lo);
    partial[at(c)] = chunk(k, lo, n);
  }
  float* o = out.data_as<float>();
  for (std::size_t k = 0; k < segments.size(); ++k) {
    double total = 0.0;
    for (std::int64_t c = first[k]; c < first[k + 1]; ++c) total += partial[at(c)];
    o[segments[k].slot] = static_cast<float>(total);
  }
}

template <class T>
void dot_segments(const Tensor& a, const Tensor& b, const std::vector<SegmentDot>& segments, Tensor& out) {
  const std::int64_t row = row_size(a);
  const T* pa = data_ptr<const T>(a);
  const T* pb = data_ptr<const T>(b);
  chunked_dots(segments, row, out, [&](std::size_t k, std::int64_t lo, std::int64_t n) {
    return chunk_dot(pa + segments[k].a * row + lo, pb + segments[k].b * row + lo, n);
  });
}

// A part's per-channel coefficients: its statistics row's mean, gamma * invstd, and beta.
struct PartCoefficients {
  const float* mean;
  std::vector<float> scale;
  const float* beta;
};

std::vector<PartCoefficients> coefficients(const Tensor& mean, const Tensor& invstd,
                                           const std::vector<NormPart>& parts) {
  const std::int64_t c = mean.dim(1);
  std::vector<PartCoefficients> out;
  for (const NormPart& g : parts) {
    PartCoefficients k{mean.data_as<float>() + g.stats * c, std::vector<float>(at(c)), g.beta->data_as<float>()};
    const float* gm = g.gamma->data_as<float>();
    const float* is = invstd.data_as<float>() + g.stats * c;
    for (std::int64_t i = 0; i < c; ++i) k.scale[at(i)] = gm[i] * is[i];
    out.push_back(std::move(k));
  }
  return out;
}

template <class T>
void add_relu_rows(const Tensor& z, const Tensor& mean, const Tensor& invstd, const std::vector<NormPart>& parts,
                   const Tensor& shortcut, Tensor& y) {
  const std::int64_t row = row_size(y), channels = z.dim(-1), pixels = row / channels, rows = y.dim(0);
  const std::vector<PartCoefficients> coef = coefficients(mean, invstd, parts);
  const T* zs = data_ptr<const T>(z);
  const T* sc = data_ptr<const T>(shortcut);
  T* ys = data_ptr<T>(y);
  std::vector<float> acc(at(row));
#pragma omp parallel for schedule(static) firstprivate(acc) if (rows > 1 && y.numel() >= kParallelThreshold)
  for (std::int64_t n = 0; n < rows; ++n) {
    for (std::int64_t i = 0; i < row; ++i) acc[at(i)] = to_f32(sc[n * row + i]);
    for (std::size_t k = 0; k < parts.size(); ++k) {
      const NormPart& g = parts[k];
      if (n < g.dst || n >= g.dst + g.count) continue;
      const T* zr = zs + (g.src + n - g.dst) * row;
      const PartCoefficients& f = coef[k];
      const float gate = g.gate_at ? *g.gate_at : g.gate;
      for (std::int64_t px = 0; px < pixels; ++px)
        for (std::int64_t c = 0; c < channels; ++c) {
          const std::int64_t i = px * channels + c;
          acc[at(i)] = add_gated(acc[at(i)], gate, norm_value(to_f32(zr[i]), f.mean[c], f.scale[at(c)], f.beta[c]));
        }
    }
    for (std::int64_t i = 0; i < row; ++i) ys[n * row + i] = from_f32<T>(relu_value(acc[at(i)]));
  }
}

// segment_dot's chunks and order, with b the normalised z: chunk `lo` of a part starts at its
// element lo (a multiple of kDotChunk), channel lo % C.
template <class T>
double chunk_dot_bn(const T* a, const T* z, std::int64_t n, std::int64_t c0, std::int64_t channels,
                    const PartCoefficients& f) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  std::int64_t c = c0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float b = norm_value(to_f32(z[i]), f.mean[c], f.scale[at(c)], f.beta[c]);
    // The lanes of chunk_dot: element i goes to accumulator i % 4 while four remain, then to 0.
    s[i < (n & ~std::int64_t{3}) ? i & 3 : 0] += static_cast<double>(to_f32(a[i])) * b;
    if (++c == channels) c = 0;
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

template <class T>
void dot_bn_parts(const Tensor& g, const Tensor& z, const Tensor& mean, const Tensor& invstd,
                  const std::vector<NormPart>& parts, Tensor& out) {
  const std::int64_t row = row_size(z), channels = z.dim(-1);
  const std::vector<PartCoefficients> coef = coefficients(mean, invstd, parts);
  std::vector<SegmentDot> dots;
  for (const NormPart& p : parts) dots.push_back({p.dst, p.src, p.count, p.slot});
  const T* pa = data_ptr<const T>(g);
  const T* pz = data_ptr<const T>(z);
  chunked_dots(dots, row, out, [&](std::size_t k, std::int64_t lo, std::int64_t n) {
    return chunk_dot_bn(pa + parts[k].dst * row + lo, pz + parts[k].src * row + lo, n, lo % channels, channels,
                        coef[k]);
  });
}

// Row s of a [S, C] statistics tensor, as the [C] vector batchnorm_* takes.
Tensor stats_row(const Tensor& t, std::int64_t s) { return t.narrow0(s, 1).reshape({t.dim(1)}); }

}  // namespace

void segment_copy(const Tensor& src, Tensor& dst, const std::vector<SegmentCopy>& segments, bool accumulate) {
  dispatch_float("segment_copy", src, [&](auto tag) {
    using T = decltype(tag);
    if (accumulate)
      copy_segments<T, true>(src, dst, segments);
    else
      copy_segments<T, false>(src, dst, segments);
  });
}

void segment_dot(const Tensor& a, const Tensor& b, const std::vector<SegmentDot>& segments, Tensor& out) {
  dispatch_float("segment_dot", a, [&](auto tag) { dot_segments<decltype(tag)>(a, b, segments, out); });
}

void batchnorm_fwd_train_segments(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                  const std::vector<BatchNormSegment>& segments, Tensor& y, Tensor& save_mean,
                                  Tensor& save_invstd) {
  std::int64_t begin = 0;
  for (std::size_t k = 0; k < segments.size(); ++k) {
    const BatchNormSegment& g = segments[k];
    const auto s = static_cast<std::int64_t>(k);
    Tensor sm = stats_row(save_mean, s), si = stats_row(save_invstd, s);
    if (!y.defined()) {
      host::batchnorm_stats(p, x.narrow0(begin, g.count), *g.running_mean, *g.running_var, sm, si);
      begin += g.count;
      continue;
    }
    Tensor ys = y.narrow0(begin, g.count);
    host::batchnorm_fwd_train(p, x.narrow0(begin, g.count), g.gamma ? *g.gamma : gamma, g.beta ? *g.beta : beta,
                              *g.running_mean, *g.running_var, ys, sm, si);
    begin += g.count;
  }
}

void batchnorm_bwd_segments(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy,
                            const Tensor& gamma, const std::vector<BatchNormSegment>& segments, const Tensor& save_mean,
                            const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode) {
  const std::vector<bool> overwrite_dgamma = bn_overwrites(segments, dgamma, false, param_mode);
  const std::vector<bool> overwrite_dbeta = bn_overwrites(segments, dbeta, true, param_mode);
  std::int64_t begin = 0;
  for (std::size_t k = 0; k < segments.size(); ++k) {
    const BatchNormSegment& g = segments[k];
    const std::int64_t n = g.count, s = static_cast<std::int64_t>(k);
    Tensor dxs = dx.narrow0(begin, n);
    Tensor& dg = g.dgamma ? *g.dgamma : dgamma;
    Tensor& db = g.dbeta ? *g.dbeta : dbeta;
    const GradMode dg_mode = overwrite_dgamma[k] ? GradMode::Overwrite : GradMode::Accumulate;
    const GradMode db_mode = overwrite_dbeta[k] ? GradMode::Overwrite : GradMode::Accumulate;
    // Without relu y is not read and may be undefined.
    const Tensor ys = p.relu ? y.narrow0(begin, n) : Tensor();
    auto run = [&](Tensor& to_dgamma, Tensor& to_dbeta, GradMode mode) {
      host::batchnorm_bwd(p, x.narrow0(begin, n), ys, dy.narrow0(begin, n), g.gamma ? *g.gamma : gamma,
                          stats_row(save_mean, s), stats_row(save_invstd, s), dxs, to_dgamma, to_dbeta, mode);
    };
    if (dg_mode == db_mode) {
      run(dg, db, dg_mode);
    } else {
      // One target is new, the other was written by an earlier segment: batchnorm_bwd takes one
      // mode, so each target gets a pass of its own (both write the same dx).
      Tensor scratch = Tensor::zeros({dg.dim(0)}, DType::F32);
      run(dg, scratch, dg_mode);
      run(scratch, db, db_mode);
    }
    begin += n;
  }
}

void batchnorm_add_relu_segments(const Tensor& z, const Tensor& mean, const Tensor& invstd,
                                 const std::vector<NormPart>& parts, const Tensor& shortcut, Tensor& y) {
  dispatch_float("batchnorm_add_relu_segments", z,
                 [&](auto tag) { add_relu_rows<decltype(tag)>(z, mean, invstd, parts, shortcut, y); });
}

void segment_dot_bn(const Tensor& g, const Tensor& z, const Tensor& mean, const Tensor& invstd,
                    const std::vector<NormPart>& parts, Tensor& out) {
  dispatch_float("segment_dot_bn", z, [&](auto tag) { dot_bn_parts<decltype(tag)>(g, z, mean, invstd, parts, out); });
}

}  // namespace gppf::kernels::host
