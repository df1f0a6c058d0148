// The segment ops of kernels/segments.hpp on the host: copy and dot against the double reference (f32
// and bf16), batch norm bit for bit against batchnorm_fwd_train/batchnorm_bwd on each segment alone,
// the reference's backward against finite differences, more than kMaxSegments segments, the dot's
// determinism across thread counts, one-line errors, and the launch counts.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <tuple>

#include "core/counters.hpp"
#include "core/graph.hpp"
#include "kernels/cast.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/ref/segments.hpp"
#include "kernels/segments.hpp"
#include "tests/common/gradcheck.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {
using test::error_of;
using test::launches_of;

using kernels::BatchNormParams;
using kernels::BatchNormSegment;
using kernels::GradMode;
using kernels::SegmentCopy;
using kernels::SegmentDot;
using Vec = std::vector<double>;

const DType kDtypes[] = {DType::F32, DType::BF16};

// Random values in dt (bf16-rounded for bf16), on the host.
Tensor input(const Shape& shape, std::uint64_t seed, DType dt, double lo = -1.0, double hi = 1.0) {
  return kernels::cast(test::random_tensor(shape, seed, lo, hi), dt);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.numel() == b.numel() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// Throws an Error naming op, on one line.
void expect_error(const std::string& op, const std::function<void()>& f, const std::string& also = "") {
  const std::string msg = error_of(f);
  EXPECT_NE(msg.find(op), std::string::npos) << "'" << msg << "' does not name " << op;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  if (!also.empty()) {
    EXPECT_NE(msg.find(also), std::string::npos) << msg;
  }
}

// ---- segment_copy ------------------------------------------------------------------------------

void check_copy(DType dt, const Shape& src_shape, std::int64_t dst_rows, const std::vector<SegmentCopy>& segments,
                GradMode mode, std::uint64_t seed) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(src_shape) +
               (mode == GradMode::Accumulate ? " accumulate" : " overwrite"));
  Shape dst_shape = src_shape;
  dst_shape[0] = dst_rows;
  const Tensor src = input(src_shape, seed, dt);
  Tensor dst = input(dst_shape, seed + 1, dt);
  const Tensor old = dst.clone();
  const std::int64_t row = src.numel() / src_shape[0];
  Vec expect = test::to_double(old);
  kernels::ref::segment_copy(row, test::to_double(src), expect, segments, mode);
  kernels::segment_copy(src, dst, segments, mode);
  EXPECT_LT(test::max_rel_error(dst, expect), dt == DType::F32 ? 1e-6 : 1e-2);
  std::vector<bool> written(static_cast<std::size_t>(dst_rows), false);
  for (const SegmentCopy& g : segments)
    for (std::int64_t r = g.dst; r < g.dst + g.count; ++r) written[static_cast<std::size_t>(r)] = true;
  for (std::int64_t r = 0; r < dst_rows; ++r)
    if (!written[static_cast<std::size_t>(r)]) {
      EXPECT_TRUE(same_bits(dst.narrow0(r, 1), old.narrow0(r, 1))) << "row " << r;
    }
}

TEST(SegmentCopy, MatchesReferenceAndLeavesOtherRowsAlone) {
  // Rows 2, 3, 4 and 8 of dst are outside every segment; the last segment has no rows.
  const std::vector<SegmentCopy> segments = {{0, 5, 3, 1.0f}, {4, 0, 2, -0.5f}, {7, 9, 3, 2.0f}, {3, 8, 0, 3.0f}};
  std::uint64_t seed = 10;
  for (const DType dt : kDtypes)
    for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate})
      for (const Shape& shape : {Shape{10}, Shape{10, 3, 5}, Shape{10, 8}})
        check_copy(dt, shape, 12, segments, mode, seed += 2);
}

// count segments of 0 to 3 rows read from scattered src rows into dst with gaps; returns dst's rows.
std::int64_t many_copies(int count, std::int64_t src_rows, std::vector<SegmentCopy>& segments) {
  std::int64_t at = 0;
  for (int k = 0; k < count; ++k) {
    const std::int64_t n = k % 4;
    segments.push_back({(k * 13) % (src_rows - 3), at, n, 0.25f * static_cast<float>(k % 5 + 1)});
    at += n + (k % 3 == 0 ? 1 : 0);
  }
  return at;
}

TEST(SegmentCopy, MoreThanMaxSegments) {
  std::vector<SegmentCopy> segments;
  const std::int64_t dst_rows = many_copies(2 * kernels::kMaxSegments + 7, 200, segments);
  std::uint64_t seed = 40;
  // 64-value rows: enough elements for the parallel loop.
  for (const DType dt : kDtypes)
    for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate})
      check_copy(dt, {200, 4, 16}, dst_rows, segments, mode, seed += 2);
}

TEST(SegmentCopy, NoRowsToCopyWritesNothing) {
  const Tensor src = input({4, 3}, 1, DType::F32);
  Tensor dst = input({5, 3}, 2, DType::F32);
  const Tensor old = dst.clone();
  kernels::segment_copy(src, dst, {}, GradMode::Overwrite);
  kernels::segment_copy(src, dst, {{0, 0, 0, 1.0f}, {2, 4, 0, 1.0f}}, GradMode::Overwrite);
  EXPECT_TRUE(same_bits(dst, old));
}

// A scale read from memory (SegmentCopy::scale_at: a gate of the step's route table) is the value
// there when the copy runs, set after the list was built: bit for bit the copy given that value, and
// the reference reads it too. `scale` is then not read.
TEST(SegmentCopy, ScaleReadFromMemory) {
  std::uint64_t seed = 70;
  for (const DType dt : kDtypes)
    for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (mode == GradMode::Accumulate ? " accumulate" : " overwrite"));
      const Tensor src = input({6, 4, 5}, seed += 2, dt);
      const Tensor old = input({8, 4, 5}, seed + 1, dt);
      float scales[2] = {1.0f, 1.0f};
      const std::vector<SegmentCopy> from_memory = {{0, 1, 2, std::nanf(""), &scales[0]},
                                                    {3, 4, 3, std::nanf(""), &scales[1]}};
      scales[0] = 0.37f;
      scales[1] = -2.5f;
      const std::vector<SegmentCopy> by_value = {{0, 1, 2, 0.37f}, {3, 4, 3, -2.5f}};
      Tensor a = old.clone(), b = old.clone();
      kernels::segment_copy(src, a, from_memory, mode);
      kernels::segment_copy(src, b, by_value, mode);
      EXPECT_TRUE(same_bits(a, b));
      Vec ra = test::to_double(old), rb = test::to_double(old);
      kernels::ref::segment_copy(20, test::to_double(src), ra, from_memory, mode);
      kernels::ref::segment_copy(20, test::to_double(src), rb, by_value, mode);
      EXPECT_EQ(ra, rb);
    }
}

// On the host the copy is recorded by value (core/graph.hpp): a replay reads the scale then in
// memory, and needs neither the caller's segment list nor its tensor objects.
TEST(SegmentCopy, HostGraphReplayReadsTheScaleThenInMemory) {
  const Tensor src = input({5, 3}, 81, DType::F32);
  Tensor dst = Tensor::zeros({5, 3}, DType::F32);
  float scale = 2.0f;
  runtime::Graph graph;
  {
    const Tensor src_object = src, dst_view = dst.narrow0(1, 4);
    Tensor dst_object = dst_view;
    std::vector<SegmentCopy> segments{{0, 0, 2, 1.0f, &scale}, {3, 2, 2, 0.5f}};
    graph.begin_capture(Stream::host());
    kernels::segment_copy(src_object, dst_object, segments, GradMode::Overwrite);
    graph.end_capture();
    segments.clear();
    dst_object = Tensor::zeros({4, 3}, DType::F32);  // the graph keeps the view it was given
  }
  EXPECT_TRUE(same_bits(dst, Tensor::zeros({5, 3}, DType::F32)));  // nothing ran yet
  scale = -3.25f;
  graph.launch();
  Tensor want = Tensor::zeros({5, 3}, DType::F32);
  Tensor want_view = want.narrow0(1, 4);
  kernels::segment_copy(src, want_view, {{0, 0, 2, -3.25f}, {3, 2, 2, 0.5f}}, GradMode::Overwrite);
  EXPECT_TRUE(same_bits(dst, want));
}

// ---- segment_dot -------------------------------------------------------------------------------

void check_dot(DType dt, const Shape& a_shape, std::int64_t b_rows, const std::vector<SegmentDot>& segments,
               std::int64_t slots, std::uint64_t seed) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(a_shape));
  Shape b_shape = a_shape;
  b_shape[0] = b_rows;
  const Tensor a = input(a_shape, seed, dt), b = input(b_shape, seed + 1, dt);
  Tensor out = test::random_tensor({slots}, seed + 2);
  const Tensor old = out.clone();
  Vec expect = test::to_double(old);
  kernels::ref::segment_dot(a.numel() / a_shape[0], test::to_double(a), test::to_double(b), segments, expect);
  kernels::segment_dot(a, b, segments, out);
  // Products of f32 or bf16 values are exact in double: the output's rounding is the only error.
  EXPECT_LT(test::max_rel_error(out, expect), 1e-6);
  std::vector<bool> written(static_cast<std::size_t>(slots), false);
  for (const SegmentDot& g : segments) {
    written[static_cast<std::size_t>(g.slot)] = true;
    if (g.count == 0) {
      EXPECT_EQ(out.data_as<float>()[g.slot], 0.0f) << "slot " << g.slot;
    }
  }
  for (std::int64_t k = 0; k < slots; ++k)
    if (!written[static_cast<std::size_t>(k)]) {
      EXPECT_EQ(out.data_as<float>()[k], old.data_as<float>()[k]) << "slot " << k;
    }
}

TEST(SegmentDot, MatchesReference) {
  // Slots out of order, slot 1 unused, a segment of no rows, one of several kDotChunk chunks.
  const std::vector<SegmentDot> segments = {{0, 3, 4, 2}, {10, 0, 2500, 0}, {5, 2600, 0, 4}, {2700, 2510, 300, 3}};
  std::uint64_t seed = 100;
  for (const DType dt : kDtypes)
    for (const Shape& shape : {Shape{3000}, Shape{3000, 7}, Shape{3000, 2, 3}})
      check_dot(dt, shape, 2900, segments, 5, seed += 3);
}

TEST(SegmentDot, MoreThanMaxSegments) {
  std::vector<SegmentDot> segments;
  const int count = 2 * kernels::kMaxSegments + 5;
  for (int k = 0; k < count; ++k) segments.push_back({(k * 7) % 90, (k * 11) % 80, k % 9, count - 1 - k});
  std::uint64_t seed = 200;
  for (const DType dt : kDtypes) check_dot(dt, {100, 33}, 100, segments, count + 2, seed += 3);
}

TEST(SegmentDot, DeterministicAcrossThreadCountsAndEqualToDot) {
  const Tensor a = input({4000, 9}, 300, DType::F32), b = input({4000, 9}, 301, DType::F32);
  const std::vector<SegmentDot> segments = {{0, 100, 3000, 0}, {3000, 0, 1000, 1}, {17, 3, 2222, 2}};
  const int saved = omp_get_max_threads();
  std::vector<float> outs[2];
  for (const int threads : {1, 2}) {
    omp_set_num_threads(threads);
    Tensor out = Tensor::zeros({3}, DType::F32);
    kernels::segment_dot(a, b, segments, out);
    outs[threads - 1] = out.to_float_vector();
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(std::memcmp(outs[0].data(), outs[1].data(), 3 * sizeof(float)), 0);
  // One segment over everything: the chunks and their order are dot's.
  Tensor whole = Tensor::zeros({1}, DType::F32), one = Tensor::zeros({1}, DType::F32);
  kernels::dot(a, b, whole, GradMode::Overwrite);
  kernels::segment_dot(a, b, {{0, 0, 4000, 0}}, one);
  EXPECT_EQ(std::memcmp(whole.data(), one.data(), sizeof(float)), 0);
}

// ---- batch norm --------------------------------------------------------------------------------

struct BnInputs {
  Tensor x, gamma, beta;
  std::vector<Tensor> rm, rv;  // per segment
};

BnInputs bn_inputs(const Shape& shape, std::size_t segments, DType dt, std::uint64_t seed) {
  const std::int64_t c = shape.back();
  BnInputs in{input(shape, seed, dt, 2.0, 5.0),
              test::random_tensor({c}, seed + 1, 0.5, 1.5),
              test::random_tensor({c}, seed + 2, -0.5, 0.5),
              {},
              {}};
  for (std::size_t k = 0; k < segments; ++k) {
    in.rm.push_back(test::random_tensor({c}, seed + 3 + 2 * k, -1.0, 1.0));
    in.rv.push_back(test::random_tensor({c}, seed + 4 + 2 * k, 0.5, 2.0));
  }
  return in;
}

std::vector<BatchNormSegment> bn_segments(const std::vector<std::int64_t>& counts, std::vector<Tensor>& rm,
                                          std::vector<Tensor>& rv) {
  std::vector<BatchNormSegment> segments;
  for (std::size_t k = 0; k < counts.size(); ++k) segments.push_back({counts[k], &rm[k], &rv[k]});
  return segments;
}

std::vector<Tensor> clones(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.defined() ? t.clone() : Tensor());
  return out;
}

Tensor stats_row(const Tensor& t, std::int64_t s) { return t.narrow0(s, 1).reshape({t.dim(1)}); }

// The affine tensors a segment uses, per role: 0 the call's (null in BatchNormSegment), j > 0 its
// own set j. Segments with the same index share the tensor.
struct AffineUse {
  std::size_t gamma = 0, beta = 0, dgamma = 0, dbeta = 0;
};

// One tensor per index of each role; index 0 (the call's) is left undefined when no segment uses it.
struct AffineSets {
  std::vector<Tensor> gamma, beta, dgamma, dbeta;
};

AffineSets affine_sets(const std::vector<AffineUse>& uses, std::size_t n_seg, std::int64_t c, std::uint64_t seed) {
  AffineSets sets;
  auto fill = [&](std::vector<Tensor>& role, std::size_t AffineUse::*member, double lo, double hi) {
    std::size_t count = 1;
    bool call = uses.empty();
    for (std::size_t k = 0; k < n_seg && !uses.empty(); ++k) {
      count = std::max(count, uses[k].*member + 1);
      call = call || uses[k].*member == 0;
    }
    for (std::size_t j = 0; j < count; ++j)
      role.push_back(j > 0 || call ? test::random_tensor({c}, seed++, lo, hi) : Tensor());
  };
  fill(sets.gamma, &AffineUse::gamma, 0.5, 1.5);
  fill(sets.beta, &AffineUse::beta, -0.5, 0.5);
  fill(sets.dgamma, &AffineUse::dgamma, -1.0, 1.0);
  fill(sets.dbeta, &AffineUse::dbeta, -1.0, 1.0);
  return sets;
}

AffineUse use_of(const std::vector<AffineUse>& uses, std::size_t k) { return uses.empty() ? AffineUse{} : uses[k]; }

// Segment k with the affine tensors of uses[k] (all the call's when uses is empty).
std::vector<BatchNormSegment> bn_segments(const std::vector<std::int64_t>& counts, std::vector<Tensor>& rm,
                                          std::vector<Tensor>& rv, AffineSets& sets,
                                          const std::vector<AffineUse>& uses) {
  std::vector<BatchNormSegment> segments = bn_segments(counts, rm, rv);
  for (std::size_t k = 0; k < counts.size(); ++k) {
    const AffineUse u = use_of(uses, k);
    if (u.gamma) segments[k].gamma = &sets.gamma[u.gamma];
    if (u.beta) segments[k].beta = &sets.beta[u.beta];
    if (u.dgamma) segments[k].dgamma = &sets.dgamma[u.dgamma];
    if (u.dbeta) segments[k].dbeta = &sets.dbeta[u.dbeta];
  }
  return segments;
}

bool same_bits_all(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  for (std::size_t j = 0; j < a.size(); ++j)
    if (a[j].defined() && !same_bits(a[j], b[j])) return false;
  return true;
}

// Forward and backward of the segments against batchnorm_fwd_train and batchnorm_bwd on each
// segment alone (copied out), in order, bit for bit: each with its gamma and beta, its dgamma and
// dbeta written per mode by the first segment to write them and added to by later ones (uses as
// AffineUse; empty: every segment the call's). The launches are those of the plain segments.
void check_bn_bitwise(const Shape& shape, const std::vector<std::int64_t>& counts, DType dt, bool relu, GradMode mode,
                      std::uint64_t seed, const std::vector<AffineUse>& uses = {}) {
  SCOPED_TRACE(shape_str(shape) + " " + std::to_string(counts.size()) + " segments " + dtype_name(dt) +
               (relu ? " relu" : "") + (mode == GradMode::Accumulate ? " accumulate" : "") +
               (uses.empty() ? "" : " own affine"));
  const std::int64_t c = shape.back(), n_seg = static_cast<std::int64_t>(counts.size());
  BatchNormParams p;
  p.relu = relu;
  p.momentum = 0.3f;
  BnInputs in = bn_inputs(shape, counts.size(), dt, seed);
  AffineSets sets = affine_sets(uses, counts.size(), c, seed + 60);
  if (uses.empty()) {
    sets.gamma[0] = in.gamma;
    sets.beta[0] = in.beta;
  }
  std::vector<Tensor> rm_alone = clones(in.rm), rv_alone = clones(in.rv);
  std::vector<Tensor> dg_alone = clones(sets.dgamma), db_alone = clones(sets.dbeta);
  const auto segments = bn_segments(counts, in.rm, in.rv, sets, uses);
  Tensor y = Tensor::empty(shape, dt), sm = Tensor::empty({n_seg, c}, DType::F32),
         si = Tensor::empty({n_seg, c}, DType::F32);
  EXPECT_EQ(launches_of([&] {
              kernels::batchnorm_fwd_train_segments(p, in.x, sets.gamma[0], sets.beta[0], segments, y, sm, si);
            }),
            3 * ((n_seg + kernels::kMaxSegments - 1) / kernels::kMaxSegments));

  const Tensor dy = input(shape, seed + 50, dt);
  Tensor dx = Tensor::empty(shape, dt);
  kernels::batchnorm_bwd_segments(p, in.x, y, dy, sets.gamma[0], segments, sm, si, dx, sets.dgamma[0], sets.dbeta[0],
                                  mode);

  std::set<std::size_t> dg_written, db_written;
  std::int64_t begin = 0;
  for (std::size_t k = 0; k < counts.size(); ++k) {
    const std::int64_t n = counts[k], s = static_cast<std::int64_t>(k);
    const AffineUse u = use_of(uses, k);
    const Tensor xs = in.x.narrow0(begin, n).clone();
    Tensor ys = Tensor::empty(xs.shape(), dt), smk = Tensor::empty({c}, DType::F32),
           sik = Tensor::empty({c}, DType::F32);
    kernels::batchnorm_fwd_train(p, xs, sets.gamma[u.gamma], sets.beta[u.beta], rm_alone[k], rv_alone[k], ys, smk, sik);
    EXPECT_TRUE(same_bits(y.narrow0(begin, n), ys)) << "y of segment " << k;
    EXPECT_TRUE(same_bits(stats_row(sm, s), smk)) << "save_mean of segment " << k;
    EXPECT_TRUE(same_bits(stats_row(si, s), sik)) << "save_invstd of segment " << k;
    EXPECT_TRUE(same_bits(in.rm[k], rm_alone[k])) << "running_mean of segment " << k;
    EXPECT_TRUE(same_bits(in.rv[k], rv_alone[k])) << "running_var of segment " << k;
    Tensor dxs = Tensor::empty(xs.shape(), dt);
    const GradMode dg_mode = dg_written.insert(u.dgamma).second ? mode : GradMode::Accumulate;
    const GradMode db_mode = db_written.insert(u.dbeta).second ? mode : GradMode::Accumulate;
    auto bwd = [&](Tensor& dg, Tensor& db, GradMode m) {
      kernels::batchnorm_bwd(p, xs, ys, dy.narrow0(begin, n).clone(), sets.gamma[u.gamma], smk, sik, dxs, dg, db, m);
    };
    Tensor scratch = Tensor::zeros({c}, DType::F32);
    if (dg_mode == db_mode) {
      bwd(dg_alone[u.dgamma], db_alone[u.dbeta], dg_mode);
    } else {
      bwd(dg_alone[u.dgamma], scratch, dg_mode);
      bwd(scratch, db_alone[u.dbeta], db_mode);
    }
    EXPECT_TRUE(same_bits(dx.narrow0(begin, n), dxs)) << "dx of segment " << k;
    begin += n;
  }
  EXPECT_TRUE(same_bits_all(sets.dgamma, dg_alone)) << "dgamma";
  EXPECT_TRUE(same_bits_all(sets.dbeta, db_alone)) << "dbeta";
}

TEST(BatchNormSegments, BitForBitAsEachSegmentAlone) {
  std::uint64_t seed = 1000;
  for (const DType dt : kDtypes)
    for (const bool relu : {false, true}) {
      // A segment of one sample still has 15 values per channel; narrow channel counts take the
      // host's tiled rows.
      check_bn_bitwise({8, 3, 5, 4}, {3, 1, 4}, dt, relu, GradMode::Overwrite, seed += 100);
      check_bn_bitwise({9, 70}, {2, 5, 2}, dt, relu, GradMode::Accumulate, seed += 100);
      // Large enough for several threads in a segment.
      check_bn_bitwise({24, 16, 16, 8}, {10, 14}, dt, relu, GradMode::Overwrite, seed += 100);
    }
}

std::vector<std::int64_t> many_counts(int segments) {
  std::vector<std::int64_t> counts;
  for (int k = 0; k < segments; ++k) counts.push_back(1 + k % 3);
  return counts;
}

std::int64_t sum(const std::vector<std::int64_t>& v) {
  std::int64_t s = 0;
  for (std::int64_t x : v) s += x;
  return s;
}

TEST(BatchNormSegments, MoreThanMaxSegments) {
  const auto counts = many_counts(kernels::kMaxSegments + 9);
  check_bn_bitwise({sum(counts), 2, 3, 5}, counts, DType::F32, true, GradMode::Accumulate, 2000);
  check_bn_bitwise({sum(counts), 2, 3, 5}, counts, DType::BF16, false, GradMode::Overwrite, 2100);
}

// Segments 0 and 2 share their own affine set (their gradients summed into one target), segment 1
// uses the call's.
const std::vector<AffineUse> kSharedAndCall = {{1, 1, 1, 1}, {0, 0, 0, 0}, {1, 1, 1, 1}};
// Every segment its own set, two of them shared: the call's tensors are undefined.
const std::vector<AffineUse> kAllOwn = {{1, 2, 1, 2}, {2, 1, 2, 1}, {1, 2, 1, 2}};

// Over kMaxSegments + 9 segments: gamma and beta cycle through the call's and two sets of their own;
// the gradient targets come in runs of 5 segments cycling through the call's and two own, a run
// crossing the packs' boundary (segments 30 to 34), and from segment 36 on alternate between two
// targets first written in the second pack. With `paired` false, dbeta keeps the runs of 5 there,
// so segment 36 writes its dgamma first but adds to its dbeta.
std::vector<AffineUse> many_uses(std::size_t n, bool paired) {
  std::vector<AffineUse> uses;
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t run = (k / 5) % 3, grad = k >= 36 ? 3 + k % 2 : run;
    uses.push_back({k % 3, (k + 1) % 3, grad, paired ? grad : run});
  }
  return uses;
}

TEST(BatchNormSegments, OwnAffineBitForBitAsEachSegmentAlone) {
  std::uint64_t seed = 5000;
  const auto many = many_counts(kernels::kMaxSegments + 9);
  for (const DType dt : kDtypes)
    for (const bool relu : {false, true})
      for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
        check_bn_bitwise({8, 3, 5, 4}, {3, 1, 4}, dt, relu, mode, seed += 100, kSharedAndCall);
        check_bn_bitwise({9, 70}, {2, 5, 2}, dt, relu, mode, seed += 100, kAllOwn);
        check_bn_bitwise({sum(many), 2, 3, 5}, many, dt, relu, mode, seed += 100, many_uses(many.size(), true));
        check_bn_bitwise({sum(many), 2, 3, 5}, many, dt, relu, mode, seed += 100, many_uses(many.size(), false));
      }
}

// Pixel rows of each segment, for the reference.
std::vector<std::int64_t> pixel_rows(const Shape& shape, const std::vector<std::int64_t>& counts) {
  const std::int64_t per_sample = shape_numel(shape) / shape[0] / shape.back();
  std::vector<std::int64_t> rows;
  for (std::int64_t n : counts) rows.push_back(n * per_sample);
  return rows;
}

void check_bn_against_ref(const Shape& shape, const std::vector<std::int64_t>& counts, DType dt, bool relu,
                          std::uint64_t seed) {
  SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dt) + (relu ? " relu" : ""));
  const std::int64_t c = shape.back(), n_seg = static_cast<std::int64_t>(counts.size());
  const double tol = dt == DType::F32 ? 1e-4 : 2e-2;
  BatchNormParams p;
  p.relu = relu;
  BnInputs in = bn_inputs(shape, counts.size(), dt, seed);
  std::vector<Vec> rm, rv;
  for (std::size_t k = 0; k < counts.size(); ++k) {
    rm.push_back(test::to_double(in.rm[k]));
    rv.push_back(test::to_double(in.rv[k]));
  }
  const auto rows = pixel_rows(shape, counts);
  const Vec x = test::to_double(in.x), gamma = test::to_double(in.gamma);
  Vec y, sm, si;
  kernels::ref::batchnorm_fwd_train_segments(p, c, rows, x, gamma, test::to_double(in.beta), rm, rv, y, sm, si);
  Tensor ty = Tensor::empty(shape, dt), tsm = Tensor::empty({n_seg, c}, DType::F32),
         tsi = Tensor::empty({n_seg, c}, DType::F32);
  kernels::batchnorm_fwd_train_segments(p, in.x, in.gamma, in.beta, bn_segments(counts, in.rm, in.rv), ty, tsm, tsi);
  EXPECT_LT(test::max_rel_error(ty, y), tol);
  EXPECT_LT(test::max_rel_error(tsm, sm), 1e-4);
  EXPECT_LT(test::max_rel_error(tsi, si), 1e-4);
  for (std::size_t k = 0; k < counts.size(); ++k) {
    EXPECT_LT(test::max_rel_error(in.rm[k], rm[k]), 1e-4) << "segment " << k;
    EXPECT_LT(test::max_rel_error(in.rv[k], rv[k]), 1e-4) << "segment " << k;
  }
  const Tensor dy = input(shape, seed + 50, dt);
  Vec dx, dg, db;
  kernels::ref::batchnorm_bwd_segments(p, c, rows, x, test::to_double(ty), test::to_double(dy), gamma,
                                       test::to_double(tsm), test::to_double(tsi), dx, dg, db);
  Tensor tdx = Tensor::empty(shape, dt), tdg = Tensor::empty({c}, DType::F32), tdb = Tensor::empty({c}, DType::F32);
  kernels::batchnorm_bwd_segments(p, in.x, ty, dy, in.gamma, bn_segments(counts, in.rm, in.rv), tsm, tsi, tdx, tdg, tdb,
                                  GradMode::Overwrite);
  EXPECT_LT(test::max_rel_error(tdx, dx), tol);
  EXPECT_LT(test::max_rel_error(tdg, dg), dt == DType::F32 ? 1e-4 : 1e-3);
  EXPECT_LT(test::max_rel_error(tdb, db), dt == DType::F32 ? 1e-4 : 1e-3);
}

// Each lego's parameters have their own gradient mode: a segment's target_mode decides what the
// first writer of its own targets does, whatever the call's param_mode.
TEST(BatchNormSegments, TargetModeDecidesForOwnTargets) {
  const std::vector<std::int64_t> counts = {3, 2, 4};
  const Shape shape{9, 2, 3};
  BnInputs in = bn_inputs(shape, counts.size(), DType::F32, 31);
  std::vector<kernels::BatchNormSegment> segs;
  for (std::size_t k = 0; k < counts.size(); ++k) segs.push_back({counts[k], &in.rm[k], &in.rv[k]});
  Tensor y = Tensor::empty(shape, DType::F32), sm = Tensor::empty({3, 3}, DType::F32),
         si = Tensor::empty({3, 3}, DType::F32);
  const BatchNormParams p;
  kernels::batchnorm_fwd_train_segments(p, in.x, in.gamma, in.beta, segs, y, sm, si);
  const Tensor dy = input(shape, 32, DType::F32);
  // Segments 0 and 1 write lego A's targets (already holding a gradient: Accumulate); segment 2
  // writes the call's (Overwrite).
  const Tensor before = Tensor::from_vector({3}, {1.0f, -2.0f, 0.5f});
  Tensor ga = before.clone(), ba = before.clone(), gc = Tensor::zeros({3}, DType::F32),
         bc = Tensor::zeros({3}, DType::F32), dx = Tensor::empty(shape, DType::F32);
  for (int k : {0, 1}) {
    segs[static_cast<std::size_t>(k)].dgamma = &ga;
    segs[static_cast<std::size_t>(k)].dbeta = &ba;
    segs[static_cast<std::size_t>(k)].target_mode = GradMode::Accumulate;
  }
  kernels::batchnorm_bwd_segments(p, in.x, y, dy, in.gamma, segs, sm, si, dx, gc, bc, GradMode::Overwrite);
  // Expected: per-segment calls, A accumulating from `before`, the call's targets overwritten.
  Tensor ea = before.clone(), eb = before.clone(), ec = Tensor::zeros({3}, DType::F32),
         ed = Tensor::zeros({3}, DType::F32), edx = Tensor::empty(shape, DType::F32);
  std::int64_t at = 0;
  for (std::size_t k = 0; k < counts.size(); ++k) {
    const auto n = counts[k];
    Tensor edxs = edx.narrow0(at, n);
    const auto s = static_cast<std::int64_t>(k);
    kernels::batchnorm_bwd(p, in.x.narrow0(at, n), y.narrow0(at, n), dy.narrow0(at, n), in.gamma,
                           sm.narrow0(s, 1).reshape({3}), si.narrow0(s, 1).reshape({3}), edxs, k < 2 ? ea : ec,
                           k < 2 ? eb : ed, k < 2 ? GradMode::Accumulate : GradMode::Overwrite);
    at += n;
  }
  EXPECT_EQ(ga.to_float_vector(), ea.to_float_vector());
  EXPECT_EQ(ba.to_float_vector(), eb.to_float_vector());
  EXPECT_EQ(gc.to_float_vector(), ec.to_float_vector());
  EXPECT_EQ(bc.to_float_vector(), ed.to_float_vector());
  EXPECT_EQ(dx.to_float_vector(), edx.to_float_vector());
}

TEST(BatchNormSegments, MatchesReference) {
  std::uint64_t seed = 3000;
  for (const DType dt : kDtypes)
    for (const bool relu : {false, true}) {
      check_bn_against_ref({7, 3, 3, 5}, {2, 4, 1}, dt, relu, seed += 100);
      check_bn_against_ref({12, 11}, {3, 2, 7}, dt, relu, seed += 100);
    }
}

TEST(BatchNormSegments, DgammaDbetaAreThePerSegmentSums) {
  // Each segment's gradients from batchnorm_bwd, in double: the segments' call gives their sum.
  const Shape shape{6, 2, 2, 3};
  const std::vector<std::int64_t> counts = {1, 3, 2};
  BatchNormParams p;
  BnInputs in = bn_inputs(shape, counts.size(), DType::F32, 4000);
  Tensor y = Tensor::empty(shape, DType::F32), sm = Tensor::empty({3, 3}, DType::F32),
         si = Tensor::empty({3, 3}, DType::F32);
  kernels::batchnorm_fwd_train_segments(p, in.x, in.gamma, in.beta, bn_segments(counts, in.rm, in.rv), y, sm, si);
  const Tensor dy = test::random_tensor(shape, 4001);
  Vec dg_sum(3, 0.0), db_sum(3, 0.0);
  std::int64_t begin = 0;
  for (std::size_t k = 0; k < counts.size(); ++k) {
    Tensor dxs = Tensor::empty(in.x.narrow0(begin, counts[k]).shape(), DType::F32);
    Tensor dgk = Tensor::empty({3}, DType::F32), dbk = Tensor::empty({3}, DType::F32);
    kernels::batchnorm_bwd(p, in.x.narrow0(begin, counts[k]), Tensor(), dy.narrow0(begin, counts[k]), in.gamma,
                           stats_row(sm, static_cast<std::int64_t>(k)), stats_row(si, static_cast<std::int64_t>(k)),
                           dxs, dgk, dbk, GradMode::Overwrite);
    for (int j = 0; j < 3; ++j) {
      dg_sum[static_cast<std::size_t>(j)] += dgk.data_as<float>()[j];
      db_sum[static_cast<std::size_t>(j)] += dbk.data_as<float>()[j];
    }
    begin += counts[k];
  }
  Tensor dx = Tensor::empty(shape, DType::F32), dg = Tensor::empty({3}, DType::F32),
         db = Tensor::empty({3}, DType::F32);
  kernels::batchnorm_bwd_segments(p, in.x, Tensor(), dy, in.gamma, bn_segments(counts, in.rm, in.rv), sm, si, dx, dg,
                                  db, GradMode::Overwrite);
  EXPECT_LT(test::max_rel_error(dg, dg_sum), 1e-6);
  EXPECT_LT(test::max_rel_error(db, db_sum), 1e-6);
  // Accumulate adds the same sums to what is there.
  kernels::batchnorm_bwd_segments(p, in.x, Tensor(), dy, in.gamma, bn_segments(counts, in.rm, in.rv), sm, si, dx, dg,
                                  db, GradMode::Accumulate);
  for (std::size_t j = 0; j < 3; ++j) {
    dg_sum[j] *= 2;
    db_sum[j] *= 2;
  }
  EXPECT_LT(test::max_rel_error(dg, dg_sum), 1e-6);
  EXPECT_LT(test::max_rel_error(db, db_sum), 1e-6);
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The reference's backward against central differences of sum(w * y), y the segments' forward;
// segment s uses affine set affine[s] of `sets`.
void check_ref_gradients(bool relu, std::uint64_t seed, const std::vector<std::size_t>& affine = {0, 0, 0},
                         std::size_t sets = 1) {
  SCOPED_TRACE(std::to_string(sets) + " affine sets");
  BatchNormParams p;
  p.relu = relu;
  const std::int64_t c = 3;
  const std::vector<std::int64_t> rows = {3, 2, 4};
  const Vec x = test::random_vector(9 * c, seed, -2.0, 3.0);
  std::vector<Vec> gamma, beta;
  for (std::size_t j = 0; j < sets; ++j) {
    gamma.push_back(test::random_vector(c, seed + 1 + 2 * j, 0.5, 1.5));
    beta.push_back(test::random_vector(c, seed + 2 + 2 * j, -0.3, 0.3));
  }
  const Vec w = test::random_vector(9 * c, seed + 100);
  auto forward = [&](const BatchNormParams& q, const Vec& xv, const std::vector<Vec>& g, const std::vector<Vec>& b) {
    std::vector<Vec> rm(rows.size(), Vec(c, 0.0)), rv(rows.size(), Vec(c, 1.0));
    Vec y, sm, si;
    kernels::ref::batchnorm_fwd_train_segments(q, c, rows, affine, xv, g, b, rm, rv, y, sm, si);
    return std::make_tuple(y, sm, si);
  };
  if (relu) {
    // Kink guard: no pre-activation may sit within reach of the finite-difference step.
    BatchNormParams plain = p;
    plain.relu = false;
    double closest = INFINITY;
    int negatives = 0;
    const Vec z = std::get<0>(forward(plain, x, gamma, beta));
    for (double v : z) {
      closest = std::min(closest, std::abs(v));
      negatives += v < 0;
    }
    ASSERT_GT(closest, 1e-3) << "pick another seed: a pre-activation sits on the ReLU kink";
    ASSERT_GT(negatives, 0) << "the ReLU mask must be exercised";
  }
  const auto [y, sm, si] = forward(p, x, gamma, beta);
  Vec dx;
  std::vector<Vec> dgamma, dbeta;
  kernels::ref::batchnorm_bwd_segments(p, c, rows, affine, x, y, w, gamma, sm, si, dx, dgamma, dbeta);
  ASSERT_EQ(dgamma.size(), sets);
  ASSERT_EQ(dbeta.size(), sets);
  test::GradCheckOptions o;
  o.step = 1e-6;
  auto fx = [&](const Vec& v) { return dot(w, std::get<0>(forward(p, v, gamma, beta))); };
  const auto rx = test::check_gradient(fx, x, dx, o);
  EXPECT_TRUE(rx.ok) << "dx " << rx.message();
  EXPECT_EQ(rx.checked, x.size());
  for (std::size_t j = 0; j < sets; ++j) {
    auto fg = [&](const Vec& v) {
      std::vector<Vec> g = gamma;
      g[j] = v;
      return dot(w, std::get<0>(forward(p, x, g, beta)));
    };
    auto fb = [&](const Vec& v) {
      std::vector<Vec> b = beta;
      b[j] = v;
      return dot(w, std::get<0>(forward(p, x, gamma, b)));
    };
    const auto rg = test::check_gradient(fg, gamma[j], dgamma[j], o);
    const auto rb = test::check_gradient(fb, beta[j], dbeta[j], o);
    EXPECT_TRUE(rg.ok) << "dgamma of set " << j << " " << rg.message();
    EXPECT_TRUE(rb.ok) << "dbeta of set " << j << " " << rb.message();
  }
}

TEST(BatchNormSegmentsRef, BackwardMatchesFiniteDifferences) { check_ref_gradients(false, 11); }
TEST(BatchNormSegmentsRef, BackwardWithReluMatchesFiniteDifferences) { check_ref_gradients(true, 21); }
TEST(BatchNormSegmentsRef, OwnAffineBackwardMatchesFiniteDifferences) {
  // Segments 0 and 2 share set 1; set 2 is used by no segment (zero gradients).
  check_ref_gradients(false, 31, {1, 0, 1}, 3);
  check_ref_gradients(true, 41, {0, 1, 2}, 3);
}

// ---- errors and launch counts ------------------------------------------------------------------

// Batch norm over segments recorded on the host: the segments point at the caller's Tensor objects,
// which the recording copies (their storage included), so a replay runs on the tensors of the capture
// after the caller's objects and list are gone or point elsewhere; bit for bit an eager call.
TEST(BatchNormSegments, HostGraphHoldsTheSegmentsTensors) {
  const Shape shape{7, 2, 3};
  const std::vector<std::int64_t> counts{3, 4};
  const std::int64_t c = shape.back();
  BatchNormParams p;
  p.relu = true;
  p.momentum = 0.2f;
  BnInputs in = bn_inputs(shape, 2, DType::F32, 90);
  const Tensor own_gamma = test::random_tensor({c}, 95, 0.5, 1.5);
  // The eager run, on clones.
  std::vector<Tensor> rm_e = clones(in.rm), rv_e = clones(in.rv);
  Tensor dg_e = Tensor::zeros({c}, DType::F32), db_e = Tensor::zeros({c}, DType::F32);
  Tensor own_dg_e = Tensor::zeros({c}, DType::F32);
  auto segments_of = [&](std::vector<Tensor>& rm, std::vector<Tensor>& rv, Tensor& own_dg) {
    std::vector<BatchNormSegment> segs = bn_segments(counts, rm, rv);
    segs[1].gamma = &own_gamma;
    segs[1].dgamma = &own_dg;
    return segs;
  };
  Tensor y_e = Tensor::empty(shape, DType::F32), sm_e = Tensor::empty({2, c}, DType::F32),
         si_e = Tensor::empty({2, c}, DType::F32), dx_e = Tensor::empty(shape, DType::F32);
  const Tensor dy = input(shape, 96, DType::F32);
  {
    const auto segs = segments_of(rm_e, rv_e, own_dg_e);
    kernels::batchnorm_fwd_train_segments(p, in.x, in.gamma, in.beta, segs, y_e, sm_e, si_e);
    kernels::batchnorm_bwd_segments(p, in.x, y_e, dy, in.gamma, segs, sm_e, si_e, dx_e, dg_e, db_e,
                                    GradMode::Overwrite);
  }
  // The recorded run: the segments' tensor objects live in a scope that ends before the launch.
  std::vector<Tensor> rm_g = clones(in.rm), rv_g = clones(in.rv);
  Tensor dg_g = Tensor::zeros({c}, DType::F32), db_g = Tensor::zeros({c}, DType::F32);
  Tensor own_dg_g = Tensor::zeros({c}, DType::F32);
  Tensor y_g = Tensor::empty(shape, DType::F32), sm_g = Tensor::empty({2, c}, DType::F32),
         si_g = Tensor::empty({2, c}, DType::F32), dx_g = Tensor::empty(shape, DType::F32);
  runtime::Graph graph;
  {
    std::vector<Tensor> rm = rm_g, rv = rv_g;  // objects of this scope, sharing the storage
    Tensor own_dg = own_dg_g;
    std::vector<BatchNormSegment> segs = segments_of(rm, rv, own_dg);
    graph.begin_capture(Stream::host());
    kernels::batchnorm_fwd_train_segments(p, in.x, in.gamma, in.beta, segs, y_g, sm_g, si_g);
    kernels::batchnorm_bwd_segments(p, in.x, y_g, dy, in.gamma, segs, sm_g, si_g, dx_g, dg_g, db_g,
                                    GradMode::Overwrite);
    graph.end_capture();
    // What the segments point at now holds other tensors: the recording must not read them.
    for (Tensor& t : rm) t = Tensor::zeros({c}, DType::F32);
    for (Tensor& t : rv) t = Tensor::zeros({c}, DType::F32);
    own_dg = Tensor();
    segs.clear();
  }
  graph.launch();
  EXPECT_TRUE(same_bits(y_g, y_e));
  EXPECT_TRUE(same_bits(dx_g, dx_e));
  EXPECT_TRUE(same_bits(dg_g, dg_e));
  EXPECT_TRUE(same_bits(db_g, db_e));
  EXPECT_TRUE(same_bits(own_dg_g, own_dg_e));
  EXPECT_TRUE(same_bits_all(rm_g, rm_e));
  EXPECT_TRUE(same_bits_all(rv_g, rv_e));
}

TEST(Segments, BadArgumentsGiveOneLineErrors) {
  const Tensor src = input({6, 4}, 1, DType::F32);
  Tensor dst = Tensor::zeros({5, 4}, DType::F32), dst16 = Tensor::zeros({5, 4}, DType::BF16),
         wide = Tensor::zeros({5, 5}, DType::F32), ints = Tensor::zeros({5, 4}, DType::I32);
  const std::string copy = "segment_copy";
  expect_error(
      copy,
      [&] {
        kernels::segment_copy(src, dst16, {{0, 0, 1, 1.0f}}, GradMode::Overwrite);
      },
      "dst");
  expect_error(
      copy,
      [&] {
        kernels::segment_copy(src, wide, {{0, 0, 1, 1.0f}}, GradMode::Overwrite);
      },
      "differ");
  expect_error(
      copy,
      [&] {
        kernels::segment_copy(ints, dst, {{0, 0, 1, 1.0f}}, GradMode::Overwrite);
      },
      "src");
  expect_error(
      copy,
      [&] {
        kernels::segment_copy(src, dst, {{4, 0, 3, 1.0f}}, GradMode::Overwrite);
      },
      "src");
  expect_error(
      copy,
      [&] {
        kernels::segment_copy(src, dst, {{0, 3, 3, 1.0f}}, GradMode::Overwrite);
      },
      "dst");
  expect_error(copy, [&] { kernels::segment_copy(src, dst, {{0, 0, -1, 1.0f}}, GradMode::Overwrite); });
  expect_error(
      copy,
      [&] {
        kernels::segment_copy(src, dst, {{0, 0, 2, 1.0f}, {2, 1, 2, 1.0f}}, GradMode::Overwrite);
      },
      "overlap");

  Tensor out = Tensor::zeros({3}, DType::F32), out16 = Tensor::zeros({3}, DType::BF16);
  const std::string dot_op = "segment_dot";
  expect_error(
      dot_op,
      [&] {
        kernels::segment_dot(src, src, {{0, 0, 1, 0}}, out16);
      },
      "out");
  expect_error(
      dot_op,
      [&] {
        kernels::segment_dot(src, src, {{0, 0, 1, 3}}, out);
      },
      "slot");
  expect_error(
      dot_op,
      [&] {
        kernels::segment_dot(src, src, {{0, 0, 1, 1}, {1, 1, 1, 1}}, out);
      },
      "slot 1");
  expect_error(
      dot_op,
      [&] {
        kernels::segment_dot(src, dst, {{0, 3, 3, 0}}, out);
      },
      "rows [3, 6) of b");
  expect_error(
      dot_op,
      [&] {
        kernels::segment_dot(src, wide, {{0, 0, 1, 0}}, out);
      },
      "differ");

  const Shape shape{5, 4, 3};
  BnInputs in = bn_inputs(shape, 3, DType::F32, 7);
  Tensor y = Tensor::empty(shape, DType::F32), sm = Tensor::empty({2, 3}, DType::F32),
         si = Tensor::empty({2, 3}, DType::F32);
  const BatchNormParams p;
  const std::string fwd = "batchnorm_fwd_train_segments";
  auto run_fwd = [&](std::vector<BatchNormSegment> segments) {
    kernels::batchnorm_fwd_train_segments(p, in.x, in.gamma, in.beta, segments, y, sm, si);
  };
  expect_error(
      fwd,
      [&] {
        run_fwd({{2, &in.rm[0], &in.rv[0]}, {2, &in.rm[1], &in.rv[1]}});
      },
      "cover");
  expect_error(
      fwd,
      [&] {
        run_fwd({{5, &in.rm[0], &in.rv[0]}, {0, &in.rm[1], &in.rv[1]}});
      },
      "segment 1");
  expect_error(
      fwd,
      [&] {
        run_fwd({{2, &in.rm[0], &in.rv[0]}, {3, nullptr, &in.rv[1]}});
      },
      "running statistics");
  expect_error(
      fwd,
      [&] {
        run_fwd({{2, &in.rm[0], &in.rv[0]}, {3, &in.rm[0], &in.rv[1]}});
      },
      "share");
  Tensor bad_rm = Tensor::zeros({4}, DType::F32);
  expect_error(
      fwd,
      [&] {
        run_fwd({{2, &in.rm[0], &in.rv[0]}, {3, &bad_rm, &in.rv[1]}});
      },
      "running_mean");
  expect_error(
      fwd,
      [&] {
        run_fwd({{5, &in.rm[0], &in.rv[0]}});
      },
      "save_mean");  // save_mean is [2, 3]
  // [N, C]: a segment of one sample has one value per channel.
  const Tensor flat = input({3, 3}, 8, DType::F32);
  Tensor flat_y = Tensor::empty({3, 3}, DType::F32);
  expect_error(
      fwd,
      [&] {
        kernels::batchnorm_fwd_train_segments(p, flat, in.gamma, in.beta,
                                              {{2, &in.rm[0], &in.rv[0]}, {1, &in.rm[1], &in.rv[1]}}, flat_y, sm, si);
      },
      "at least 2");

  Tensor dx = Tensor::empty(shape, DType::F32), dg = Tensor::empty({3}, DType::F32),
         db = Tensor::empty({4}, DType::F32);
  const std::string bwd = "batchnorm_bwd_segments";
  const std::vector<BatchNormSegment> two = {{2, nullptr, nullptr}, {3, nullptr, nullptr}};
  expect_error(
      bwd,
      [&] { kernels::batchnorm_bwd_segments(p, in.x, y, y, in.gamma, two, sm, si, dx, dg, db, GradMode::Overwrite); },
      "dbeta");
  db = Tensor::empty({3}, DType::F32);
  expect_error(
      bwd,
      [&] {
        kernels::batchnorm_bwd_segments(p, in.x, y, y, in.gamma, {{4, nullptr, nullptr}}, sm, si, dx, dg, db,
                                        GradMode::Overwrite);
      },
      "cover");
  Tensor short_dy = Tensor::empty({4, 4, 3}, DType::F32);
  expect_error(
      bwd,
      [&] {
        kernels::batchnorm_bwd_segments(p, in.x, y, short_dy, in.gamma, two, sm, si, dx, dg, db, GradMode::Overwrite);
      },
      "dy");
  // Without relu, y is not read: an undefined tensor is fine.
  EXPECT_NO_THROW(
      kernels::batchnorm_bwd_segments(p, in.x, Tensor(), y, in.gamma, two, sm, si, dx, dg, db, GradMode::Overwrite));
}

TEST(BatchNormSegments, BadOwnAffineGiveOneLineErrors) {
  const Shape shape{5, 4, 3};
  BnInputs in = bn_inputs(shape, 2, DType::F32, 9);
  Tensor y = Tensor::empty(shape, DType::F32), sm = Tensor::empty({2, 3}, DType::F32),
         si = Tensor::empty({2, 3}, DType::F32), dx = Tensor::empty(shape, DType::F32);
  const Tensor g = test::random_tensor({3}, 10), wide = Tensor::zeros({4}, DType::F32),
               g16 = Tensor::zeros({3}, DType::BF16), none;
  Tensor dg = Tensor::zeros({3}, DType::F32), db = Tensor::zeros({3}, DType::F32), dg2 = Tensor::zeros({3}, DType::F32),
         dg16 = Tensor::zeros({3}, DType::BF16), wide_grad = Tensor::zeros({4}, DType::F32), undefined;
  const BatchNormParams p;
  auto seg = [&](std::size_t k, std::int64_t n) { return BatchNormSegment{n, &in.rm[k], &in.rv[k]}; };
  auto run_fwd = [&](const Tensor& gamma, const Tensor& beta, const std::vector<BatchNormSegment>& segments) {
    kernels::batchnorm_fwd_train_segments(p, in.x, gamma, beta, segments, y, sm, si);
  };
  auto run_bwd = [&](const Tensor& gamma, Tensor& dgamma, Tensor& dbeta,
                     const std::vector<BatchNormSegment>& segments) {
    kernels::batchnorm_bwd_segments(p, in.x, y, y, gamma, segments, sm, si, dx, dgamma, dbeta, GradMode::Overwrite);
  };
  auto fwd_error = [&](const Tensor& gamma, const Tensor& beta, const std::vector<BatchNormSegment>& segments,
                       const std::string& also) {
    expect_error(
        "batchnorm_fwd_train_segments", [&] { run_fwd(gamma, beta, segments); }, also);
  };
  auto bwd_error = [&](const Tensor& gamma, Tensor& dgamma, Tensor& dbeta,
                       const std::vector<BatchNormSegment>& segments, const std::string& also) {
    expect_error(
        "batchnorm_bwd_segments", [&] { run_bwd(gamma, dgamma, dbeta, segments); }, also);
  };
  BatchNormSegment a = seg(0, 2), b = seg(1, 3);
  b.gamma = &wide;
  fwd_error(in.gamma, in.beta, {a, b}, "segment 1's gamma");
  b = seg(1, 3);
  a.beta = &g16;
  fwd_error(in.gamma, in.beta, {a, b}, "segment 0's beta");
  a = seg(0, 2);
  a.gamma = &g;
  fwd_error(none, in.beta, {a, b}, "segment 1 has no gamma");
  b.gamma = &g;
  b.beta = &g;
  fwd_error(none, none, {a, b}, "segment 0 has no beta");
  // A defined call's tensor is checked even when every segment has its own.
  a.beta = &g;
  fwd_error(wide, none, {a, b}, "gamma");
  EXPECT_NO_THROW(run_fwd(none, none, {a, b}));

  a = seg(0, 2);
  b = seg(1, 3);
  b.dgamma = &dg16;
  bwd_error(in.gamma, dg, db, {a, b}, "segment 1's dgamma");
  b.dgamma = &dg2;
  b.dbeta = &wide_grad;
  bwd_error(in.gamma, dg, db, {a, b}, "segment 1's dbeta");
  b.dbeta = nullptr;
  bwd_error(in.gamma, dg, undefined, {a, b}, "dbeta is undefined, but segment 0");
  // Views of one buffer that overlap without being the same tensor.
  Tensor buffer = Tensor::zeros({8}, DType::F32), lo = buffer.narrow0(0, 3), mid = buffer.narrow0(2, 3),
         hi = buffer.narrow0(3, 3);
  a = seg(0, 2);
  b = seg(1, 3);
  a.dgamma = &lo;
  b.dgamma = &mid;
  bwd_error(in.gamma, dg, db, {a, b}, "overlap");
  b.dgamma = &hi;
  EXPECT_NO_THROW(run_bwd(in.gamma, dg, db, {a, b}));
  // The call's dgamma passed again as a segment's dbeta.
  b = seg(1, 3);
  b.dbeta = &dg;
  bwd_error(in.gamma, dg, db, {seg(0, 2), b}, "both gradients");
  // Every segment with its own: the call's may all be undefined.
  a.gamma = b.gamma = &g;
  a.dgamma = b.dgamma = &dg;
  a.dbeta = b.dbeta = &db;
  EXPECT_NO_THROW(run_bwd(none, undefined, undefined, {a, b}));
  bwd_error(none, undefined, undefined, {a, seg(1, 3)}, "segment 1 has no gamma");
}

// Counted on every device as CUDA launches them (core/counters.hpp): one kernel per pack of
// kMaxSegments segments with rows for a copy; a fold per pack and a sum per pack with rows for a
// dot; three per pack for batch norm.
TEST(Segments, HostCountsWhatCudaLaunches) {
  const Tensor src = input({6, 4}, 1, DType::F32);
  Tensor dst = Tensor::zeros({70, 4}, DType::F32), out = Tensor::zeros({70}, DType::F32);
  std::vector<SegmentCopy> copies;
  std::vector<SegmentDot> dots;
  for (int k = 0; k < 2 * kernels::kMaxSegments + 3; ++k) {
    copies.push_back({k % 5, k, 1, 1.0f});
    dots.push_back({k % 5, k % 6, 1, k});
  }
  EXPECT_EQ(launches_of([&] { kernels::segment_copy(src, dst, copies, GradMode::Overwrite); }), 3);
  EXPECT_EQ(launches_of([&] { kernels::segment_copy(src, dst, {}, GradMode::Overwrite); }), 0);
  EXPECT_EQ(launches_of([&] { kernels::segment_copy(src, dst, {{0, 0, 0, 1.0f}}, GradMode::Accumulate); }), 0);
  EXPECT_EQ(launches_of([&] { kernels::segment_dot(src, src, dots, out); }), 6);
  EXPECT_EQ(launches_of([&] { kernels::segment_dot(src, src, {}, out); }), 0);
  // A segment of no rows still writes its slot.
  EXPECT_EQ(launches_of([&] { kernels::segment_dot(src, src, {{0, 0, 0, 0}}, out); }), 1);

  const auto counts = many_counts(kernels::kMaxSegments + 1);
  const Shape shape{sum(counts), 2, 3};
  const auto n_seg = static_cast<std::int64_t>(counts.size());
  BnInputs in = bn_inputs(shape, counts.size(), DType::F32, 5);
  Tensor y = Tensor::empty(shape, DType::F32), sm = Tensor::empty({n_seg, 3}, DType::F32),
         si = Tensor::empty({n_seg, 3}, DType::F32), dx = Tensor::empty(shape, DType::F32),
         dg = Tensor::empty({3}, DType::F32), db = Tensor::empty({3}, DType::F32);
  const auto segments = bn_segments(counts, in.rm, in.rv);
  const BatchNormParams p;
  EXPECT_EQ(
      launches_of([&] { kernels::batchnorm_fwd_train_segments(p, in.x, in.gamma, in.beta, segments, y, sm, si); }), 6);
  EXPECT_EQ(launches_of([&] {
              kernels::batchnorm_bwd_segments(p, in.x, y, y, in.gamma, segments, sm, si, dx, dg, db,
                                              GradMode::Overwrite);
            }),
            6);
  // An empty batch: no segments, nothing launched.
  const Tensor none = Tensor::empty({0, 3}, DType::F32);
  Tensor none_y = Tensor::empty({0, 3}, DType::F32), none_s = Tensor::empty({0, 3}, DType::F32);
  EXPECT_EQ(launches_of(
                [&] { kernels::batchnorm_fwd_train_segments(p, none, in.gamma, in.beta, {}, none_y, none_s, none_s); }),
            0);
}

}  // namespace
}  // namespace gppf
