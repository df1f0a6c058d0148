#include "kernels/segments.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <utility>

#include "core/counters.hpp"
#include "core/graph.hpp"
#include "kernels/elementwise.hpp"

namespace gppf::kernels {
namespace {

std::string undefined_or_desc(const Tensor& t) { return t.defined() ? t.desc() : std::string("an undefined tensor"); }

// Values per row (dim 0 is the samples): numel / N without dividing by N = 0.
std::int64_t row_size(const Tensor& t) {
  std::int64_t n = 1;
  for (int d = 1; d < t.ndim(); ++d) n *= t.dim(d);
  return n;
}

// f32 or bf16, at least 1-D.
void check_rows(const char* op, const char* what, const Tensor& t) {
  GPPF_CHECK(t.defined() && t.ndim() >= 1, op, ": ", what, " must be [N, ...], got ", undefined_or_desc(t));
  GPPF_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, op, ": ", what, " must be f32 or bf16, got ",
             t.desc());
}

// Same dtype, device and row size as ref (whose rows it is paired with).
void check_rows_like(const char* op, const char* what, const Tensor& t, const char* ref_name, const Tensor& ref) {
  check_rows(op, what, t);
  check_dtype(op, what, t, ref.dtype());
  check_same_device(op, ref, t);
  GPPF_CHECK(row_size(t) == row_size(ref), op, ": rows of ", what, " ", t.desc(), " and ", ref_name, " ", ref.desc(),
             " differ in size");
}

// Rows [begin, begin + count) inside t.
void check_range(const char* op, std::size_t segment, const char* what, std::int64_t begin, std::int64_t count,
                 const Tensor& t) {
  GPPF_CHECK(count >= 0 && begin >= 0 && begin <= t.dim(0) - count, op, ": segment ", segment, " reads rows [", begin,
             ", ", begin + count, ") of ", what, " ", t.desc());
}

void check_like(const char* op, const char* what, const Tensor& t, const Tensor& x) {
  check_shape(op, what, t, x.shape());
  check_dtype(op, what, t, x.dtype());
  check_same_device(op, x, t);
}

void check_f32(const char* op, const char* what, const Tensor& t, const Shape& shape, const Tensor& x) {
  check_shape(op, what, t, shape);
  check_dtype(op, what, t, DType::F32);
  check_same_device(op, x, t);
}

// The activation and the segments of a batch norm: [N, ..., C], segments of count > 0 covering N in
// order, every segment with at least `min_values` values per channel. Returns C.
std::int64_t check_bn_segments(const char* op, const BatchNormParams& p, const Tensor& x,
                               const std::vector<BatchNormSegment>& segments, std::int64_t min_values) {
  GPPF_CHECK(p.eps > 0.0f && std::isfinite(p.eps), op, ": eps must be positive, got ", p.eps);
  GPPF_CHECK(p.momentum >= 0.0f && p.momentum <= 1.0f, op, ": momentum must be in [0, 1], got ", p.momentum);
  GPPF_CHECK(x.defined() && x.ndim() >= 2, op, ": x must be [N, ..., C] with at least 2 dims, got ",
             undefined_or_desc(x));
  GPPF_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16, op, ": x must be f32 or bf16, got ", x.desc());
  const std::int64_t c = x.dim(-1);
  GPPF_CHECK(c > 0, op, ": x ", x.desc(), " has no channels");
  const std::int64_t per_sample = row_size(x) / c;
  std::int64_t covered = 0;
  for (std::size_t k = 0; k < segments.size(); ++k) {
    const std::int64_t n = segments[k].count;
    GPPF_CHECK(n > 0, op, ": segment ", k, " has ", n, " samples (each segment needs at least 1)");
    GPPF_CHECK(n * per_sample >= min_values, op, ": segment ", k, " of x ", x.desc(), " holds ", n * per_sample,
               " values per channel, needs at least ", min_values, " to estimate batch statistics");
    covered += n;
  }
  GPPF_CHECK(covered == x.dim(0), op, ": segments cover ", covered, " samples of x ", x.desc(), ", must cover all ",
             x.dim(0));
  return c;
}

// A segment's own affine tensor (gamma, beta, dgamma or dbeta): f32 [C] on x's device.
void check_segment_param(const char* op, std::size_t k, const char* what, const Tensor& t, std::int64_t c,
                         const Tensor& x) {
  GPPF_CHECK(t.defined() && t.shape() == Shape{c} && t.dtype() == DType::F32 && t.device() == x.device(), op,
             ": segment ", k, "'s ", what, " must be f32 [", c, "] on ", x.device().str(), ", got ",
             undefined_or_desc(t));
}

// The affine tensor `what` of every segment: its own (checked), else the call's, which must then be
// valid; a defined call's tensor is checked even when no segment uses it.
template <class T>
void check_affine(const char* op, const char* what, const std::vector<BatchNormSegment>& segments,
                  T* BatchNormSegment::*member, const Tensor& call, std::int64_t c, const Tensor& x) {
  bool needed = false;
  std::size_t first_without = 0;
  for (std::size_t k = 0; k < segments.size(); ++k) {
    if (const T* own = segments[k].*member) {
      check_segment_param(op, k, what, *own, c, x);
    } else if (!needed) {
      needed = true;
      first_without = k;
    }
  }
  if (!needed && !call.defined()) return;
  GPPF_CHECK(call.defined(), op, ": ", what, " is undefined, but segment ", first_without, " has no ", what,
             " of its own");
  check_f32(op, what, call, {c}, x);
}

// The dgamma and dbeta targets of a backward: CUDA writes each target's channel c from one thread,
// segment after segment, so two targets must be the same tensor or apart, and a dgamma never a dbeta.
void check_grad_targets(const char* op, const std::vector<BatchNormSegment>& segments, const Tensor& dgamma,
                        const Tensor& dbeta, std::int64_t c) {
  struct Target {
    std::uintptr_t begin;
    std::size_t k;
    bool dbeta;
  };
  std::vector<Target> targets;
  for (std::size_t k = 0; k < segments.size(); ++k) {
    const BatchNormSegment& g = segments[k];
    targets.push_back({reinterpret_cast<std::uintptr_t>((g.dgamma ? *g.dgamma : dgamma).data()), k, false});
    targets.push_back({reinterpret_cast<std::uintptr_t>((g.dbeta ? *g.dbeta : dbeta).data()), k, true});
  }
  std::stable_sort(targets.begin(), targets.end(), [](const Target& a, const Target& b) { return a.begin < b.begin; });
  const auto bytes = static_cast<std::uintptr_t>(c) * sizeof(float);
  auto name = [](const Target& t) { return t.dbeta ? "dbeta" : "dgamma"; };
  for (std::size_t i = 1; i < targets.size(); ++i) {
    const Target &a = targets[i - 1], &b = targets[i];
    if (a.begin == b.begin)
      GPPF_CHECK(a.dbeta == b.dbeta, op, ": segment ", a.k, "'s ", name(a), " is segment ", b.k, "'s ", name(b),
                 "; a tensor cannot take both gradients");
    else
      GPPF_CHECK(b.begin >= a.begin + bytes, op, ": segment ", a.k, "'s ", name(a), " and segment ", b.k, "'s ",
                 name(b), " overlap without being the same tensor");
  }
}

// Batch-norm segments held by value for host_launch: the tensors each segment points to are copied
// (they keep their storage), and bind() points a copy of the segments at them. Call bind() where the
// work runs, on the closure's own member: the pointers are valid while that object lives.
class HeldBnSegments {
 public:
  explicit HeldBnSegments(const std::vector<BatchNormSegment>& segments) : m_segments(segments) {
    for (const BatchNormSegment& g : segments) {
      Held h;
      if (g.running_mean) h.running_mean = *g.running_mean;
      if (g.running_var) h.running_var = *g.running_var;
      if (g.gamma) h.gamma = *g.gamma;
      if (g.beta) h.beta = *g.beta;
      if (g.dgamma) h.dgamma = *g.dgamma;
      if (g.dbeta) h.dbeta = *g.dbeta;
      m_held.push_back(std::move(h));
    }
  }
  std::vector<BatchNormSegment> bind() {
    std::vector<BatchNormSegment> out = m_segments;
    for (std::size_t k = 0; k < out.size(); ++k) {
      BatchNormSegment& g = out[k];
      Held& h = m_held[k];
      if (g.running_mean) g.running_mean = &h.running_mean;
      if (g.running_var) g.running_var = &h.running_var;
      if (g.gamma) g.gamma = &h.gamma;
      if (g.beta) g.beta = &h.beta;
      if (g.dgamma) g.dgamma = &h.dgamma;
      if (g.dbeta) g.dbeta = &h.dbeta;
    }
    return out;
  }

 private:
  struct Held {
    Tensor running_mean, running_var, gamma, beta, dgamma, dbeta;
  };
  std::vector<BatchNormSegment> m_segments;
  std::vector<Held> m_held;
};

// The same for the parts of the fused tail (their gamma and beta). A gate_at points into memory the
// caller keeps (the route table).
class HeldNormParts {
 public:
  explicit HeldNormParts(const std::vector<NormPart>& parts) : m_parts(parts) {
    for (const NormPart& g : parts) m_held.push_back({*g.gamma, *g.beta});
  }
  std::vector<NormPart> bind() {
    std::vector<NormPart> out = m_parts;
    for (std::size_t k = 0; k < out.size(); ++k) {
      out[k].gamma = &m_held[k].first;
      out[k].beta = &m_held[k].second;
    }
    return out;
  }

 private:
  std::vector<NormPart> m_parts;
  std::vector<std::pair<Tensor, Tensor>> m_held;
};

}  // namespace

std::vector<bool> bn_overwrites(const std::vector<BatchNormSegment>& segments, const Tensor& call, bool dbeta,
                                GradMode param_mode) {
  std::set<const void*> written;
  std::vector<bool> overwrite;
  for (const BatchNormSegment& g : segments) {
    const Tensor* own = dbeta ? g.dbeta : g.dgamma;
    const GradMode mode = own && g.target_mode ? *g.target_mode : param_mode;
    const bool first = written.insert(own ? own->data() : call.data()).second;
    overwrite.push_back(first && mode == GradMode::Overwrite);
  }
  return overwrite;
}

// What CUDA launches for a call, counted on every device (core/counters.hpp: host counts are a GPU
// step's); the CUDA backends return their count and the entry points check that the two agree.
std::int64_t packs(std::int64_t n) { return (n + kMaxSegments - 1) / kMaxSegments; }

void count_cuda_launches(const char* op, std::int64_t expected, std::int64_t launched) {
  GPPF_CHECK(launched < 0 || launched == expected, op, ": CUDA launched ", launched, " kernels, the counters say ",
             expected);
  runtime::count_launches(expected - 1);  // launch_on_cuda counted one
}

void segment_copy(const Tensor& src, Tensor& dst, const std::vector<SegmentCopy>& segments, GradMode mode,
                  const Stream& s) {
  constexpr const char* op = "segment_copy";
  check_rows(op, "src", src);
  check_rows_like(op, "dst", dst, "src", src);
  std::vector<std::pair<std::int64_t, std::int64_t>> written;  // dst row ranges
  for (std::size_t k = 0; k < segments.size(); ++k) {
    const SegmentCopy& g = segments[k];
    check_range(op, k, "src", g.src, g.count, src);
    check_range(op, k, "dst", g.dst, g.count, dst);
    if (g.count > 0) written.emplace_back(g.dst, g.dst + g.count);
  }
  std::sort(written.begin(), written.end());
  for (std::size_t k = 1; k < written.size(); ++k)
    GPPF_CHECK(written[k].first >= written[k - 1].second, op, ": destination rows [", written[k - 1].first, ", ",
               written[k - 1].second, ") and [", written[k].first, ", ", written[k].second, ") overlap");
  if (written.empty() || row_size(src) == 0) return;
  const bool acc = mode == GradMode::Accumulate;
  const std::int64_t expected = packs(static_cast<std::int64_t>(written.size()));
  std::int64_t launched = -1;
  if (launch_on_cuda(src.device()))
    launched = cuda::segment_copy(src, dst, segments, acc, device_stream(s, src));
  else
    runtime::host_launch([src, dst, segments, acc]() mutable { host::segment_copy(src, dst, segments, acc); });
  count_cuda_launches(op, expected, launched);
}

namespace {

// Each output slot is written by one segment (what: "segments" or "parts").
void check_distinct_slots(const char* op, const char* what, std::vector<std::int64_t> slots) {
  std::sort(slots.begin(), slots.end());
  const auto twice = std::adjacent_find(slots.begin(), slots.end());
  GPPF_CHECK(twice == slots.end(), op, ": two ", what, " write slot ", twice == slots.end() ? 0 : *twice, " of out");
}

// What a CUDA dot launches: per pack a fold kernel, and a partial-sum kernel when the pack has rows.
template <class Segment>
std::int64_t dot_launches(const std::vector<Segment>& segments) {
  std::int64_t expected = 0;
  for (std::size_t k = 0; k < segments.size(); k += kMaxSegments) {
    bool rows = false;
    for (std::size_t i = k; i < std::min(segments.size(), k + kMaxSegments); ++i) rows = rows || segments[i].count > 0;
    expected += rows ? 2 : 1;
  }
  return expected;
}

}  // namespace

void segment_dot(const Tensor& a, const Tensor& b, const std::vector<SegmentDot>& segments, Tensor& out,
                 const Stream& s) {
  constexpr const char* op = "segment_dot";
  check_rows(op, "a", a);
  check_rows_like(op, "b", b, "a", a);
  GPPF_CHECK(out.defined(), op, ": out is undefined");
  check_dtype(op, "out", out, DType::F32);
  check_same_device(op, a, out);
  std::vector<std::int64_t> slots;
  for (std::size_t k = 0; k < segments.size(); ++k) {
    const SegmentDot& g = segments[k];
    check_range(op, k, "a", g.a, g.count, a);
    check_range(op, k, "b", g.b, g.count, b);
    GPPF_CHECK(g.slot >= 0 && g.slot < out.numel(), op, ": segment ", k, " writes slot ", g.slot, " of out ",
               out.desc());
    slots.push_back(g.slot);
  }
  check_distinct_slots(op, "segments", std::move(slots));
  // Segments of no rows still write their slot (0), so only an empty list launches nothing.
  if (segments.empty()) return;
  const std::int64_t expected = dot_launches(segments);
  std::int64_t launched = -1;
  if (launch_on_cuda(a.device()))
    launched = cuda::segment_dot(a, b, segments, out, device_stream(s, a));
  else
    runtime::host_launch([a, b, segments, out]() mutable { host::segment_dot(a, b, segments, out); });
  count_cuda_launches(op, expected, launched);
}

void batchnorm_fwd_train_segments(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                  const std::vector<BatchNormSegment>& segments, Tensor& y, Tensor& save_mean,
                                  Tensor& save_invstd, const Stream& s) {
  constexpr const char* op = "batchnorm_fwd_train_segments";
  const std::int64_t c = check_bn_segments(op, p, x, segments, 2);
  const auto n_seg = static_cast<std::int64_t>(segments.size());
  const bool apply = y.defined();
  if (apply) {
    check_like(op, "y", y, x);
    check_affine(op, "gamma", segments, &BatchNormSegment::gamma, gamma, c, x);
    check_affine(op, "beta", segments, &BatchNormSegment::beta, beta, c, x);
  }
  check_f32(op, "save_mean", save_mean, {n_seg, c}, x);
  check_f32(op, "save_invstd", save_invstd, {n_seg, c}, x);
  std::vector<const void*> stats;
  for (std::size_t k = 0; k < segments.size(); ++k) {
    const BatchNormSegment& g = segments[k];
    GPPF_CHECK(g.running_mean && g.running_var, op, ": segment ", k, " has no running statistics");
    check_f32(op, "running_mean", *g.running_mean, {c}, x);
    check_f32(op, "running_var", *g.running_var, {c}, x);
    stats.push_back(g.running_mean->data());
    stats.push_back(g.running_var->data());
  }
  // CUDA updates every segment's statistics at once: shared ones would race.
  std::sort(stats.begin(), stats.end());
  GPPF_CHECK(std::adjacent_find(stats.begin(), stats.end()) == stats.end(), op,
             ": two segments share running statistics; each segment needs its own");
  if (segments.empty()) return;
  std::int64_t launched = -1;
  if (launch_on_cuda(x.device()))
    launched =
        cuda::batchnorm_fwd_train_segments(p, x, gamma, beta, segments, y, save_mean, save_invstd, device_stream(s, x));
  else
    runtime::host_launch([p, x, gamma, beta, held = HeldBnSegments(segments), y, save_mean, save_invstd]() mutable {
      host::batchnorm_fwd_train_segments(p, x, gamma, beta, held.bind(), y, save_mean, save_invstd);
    });
  count_cuda_launches(op, (apply ? 3 : 2) * packs(n_seg), launched);  // statistics, finalize, apply
}

void batchnorm_bwd_segments(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy,
                            const Tensor& gamma, const std::vector<BatchNormSegment>& segments, const Tensor& save_mean,
                            const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode,
                            const Stream& s) {
  constexpr const char* op = "batchnorm_bwd_segments";
  const std::int64_t c = check_bn_segments(op, p, x, segments, 1);
  const auto n_seg = static_cast<std::int64_t>(segments.size());
  if (p.relu) check_like(op, "y", y, x);
  check_like(op, "dy", dy, x);
  check_like(op, "dx", dx, x);
  check_affine(op, "gamma", segments, &BatchNormSegment::gamma, gamma, c, x);
  check_f32(op, "save_mean", save_mean, {n_seg, c}, x);
  check_f32(op, "save_invstd", save_invstd, {n_seg, c}, x);
  check_affine(op, "dgamma", segments, &BatchNormSegment::dgamma, dgamma, c, x);
  check_affine(op, "dbeta", segments, &BatchNormSegment::dbeta, dbeta, c, x);
  check_grad_targets(op, segments, dgamma, dbeta, c);
  if (segments.empty()) return;
  std::int64_t launched = -1;
  if (launch_on_cuda(x.device()))
    launched = cuda::batchnorm_bwd_segments(p, x, y, dy, gamma, segments, save_mean, save_invstd, dx, dgamma, dbeta,
                                            param_mode, device_stream(s, x));
  else
    runtime::host_launch([p, x, y, dy, gamma, held = HeldBnSegments(segments), save_mean, save_invstd, dx, dgamma,
                          dbeta, param_mode]() mutable {
      host::batchnorm_bwd_segments(p, x, y, dy, gamma, held.bind(), save_mean, save_invstd, dx, dgamma, dbeta,
                                   param_mode);
    });
  count_cuda_launches(op, 3 * packs(n_seg), launched);  // sums, finalize, dx
}

namespace {

// The parts of batchnorm_add_relu_segments / segment_dot_bn against z, the statistics and the rows
// `rows` (the layer's output or its gradient).
void check_norm_parts(const char* op, const Tensor& z, const Tensor& mean, const Tensor& invstd,
                      const std::vector<NormPart>& parts, const char* rows_name, const Tensor& rows) {
  GPPF_CHECK(z.defined() && z.ndim() >= 2, op, ": z must be [R, ..., C] with at least 2 dims, got ",
             undefined_or_desc(z));
  check_rows(op, "z", z);
  check_rows_like(op, rows_name, rows, "z", z);
  const std::int64_t c = z.dim(-1);
  GPPF_CHECK(c > 0 && mean.defined() && mean.ndim() == 2 && mean.dim(1) == c, op, ": mean must be f32 [S, ", c,
             "], got ", undefined_or_desc(mean));
  check_f32(op, "mean", mean, mean.shape(), z);
  check_f32(op, "invstd", invstd, mean.shape(), z);
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const NormPart& g = parts[k];
    check_range(op, k, "z", g.src, g.count, z);
    check_range(op, k, rows_name, g.dst, g.count, rows);
    GPPF_CHECK(g.stats >= 0 && g.stats < mean.dim(0), op, ": part ", k, " reads statistics row ", g.stats, " of ",
               mean.desc());
    GPPF_CHECK(g.gamma && g.beta, op, ": part ", k, " has no gamma or beta");
    check_segment_param(op, k, "gamma", *g.gamma, c, z);
    check_segment_param(op, k, "beta", *g.beta, c, z);
  }
}

}  // namespace

void batchnorm_add_relu_segments(const Tensor& z, const Tensor& mean, const Tensor& invstd,
                                 const std::vector<NormPart>& parts, const Tensor& shortcut, Tensor& y,
                                 const Stream& s) {
  constexpr const char* op = "batchnorm_add_relu_segments";
  check_norm_parts(op, z, mean, invstd, parts, "y", y);
  check_like(op, "shortcut", shortcut, y);
  GPPF_CHECK(static_cast<int>(parts.size()) <= kMaxSegments, op, ": ", parts.size(), " parts, at most ", kMaxSegments,
             " in one pass");
  for (std::size_t k = 0; k < parts.size(); ++k)
    GPPF_CHECK(parts[k].gate_at || std::isfinite(parts[k].gate), op, ": part ", k, " has gate ", parts[k].gate);
  if (y.numel() == 0) return;
  std::int64_t launched = -1;
  if (launch_on_cuda(z.device()))
    launched = cuda::batchnorm_add_relu_segments(z, mean, invstd, parts, shortcut, y, device_stream(s, z));
  else
    runtime::host_launch([z, mean, invstd, held = HeldNormParts(parts), shortcut, y]() mutable {
      host::batchnorm_add_relu_segments(z, mean, invstd, held.bind(), shortcut, y);
    });
  count_cuda_launches(op, 1, launched);
}

void segment_dot_bn(const Tensor& g, const Tensor& z, const Tensor& mean, const Tensor& invstd,
                    const std::vector<NormPart>& parts, Tensor& out, const Stream& s) {
  constexpr const char* op = "segment_dot_bn";
  check_norm_parts(op, z, mean, invstd, parts, "g", g);
  GPPF_CHECK(out.defined(), op, ": out is undefined");
  check_dtype(op, "out", out, DType::F32);
  check_same_device(op, z, out);
  std::vector<NormPart> live;  // the parts with a slot, in order
  std::vector<std::int64_t> slots;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    if (parts[k].slot < 0) continue;
    GPPF_CHECK(parts[k].slot < out.numel(), op, ": part ", k, " writes slot ", parts[k].slot, " of out ", out.desc());
    slots.push_back(parts[k].slot);
    live.push_back(parts[k]);
  }
  check_distinct_slots(op, "parts", std::move(slots));
  if (live.empty()) return;
  const std::int64_t expected = dot_launches(live);
  std::int64_t launched = -1;
  if (launch_on_cuda(z.device()))
    launched = cuda::segment_dot_bn(g, z, mean, invstd, live, out, device_stream(s, z));
  else
    runtime::host_launch([g, z, mean, invstd, held = HeldNormParts(live), out]() mutable {
      host::segment_dot_bn(g, z, mean, invstd, held.bind(), out);
    });
  count_cuda_launches(op, expected, launched);
}

}  // namespace gppf::kernels
