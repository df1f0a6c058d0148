// CUDA segment ops against the host backend (itself tested against kernels/ref and batchnorm_*): f32
// within 1e-5 (copy, dot) or 1e-3 (batch norm), bf16 within 2e-2, the host fed the same bf16 values;
// more than kMaxSegments segments (several launches); the launches each call counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "core/counters.hpp"
#include "core/cuda_runtime.hpp"
#include "kernels/cast.hpp"
#include "kernels/segments.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {
using test::launches_of;

using kernels::BatchNormParams;
using kernels::BatchNormSegment;
using kernels::GradMode;
using kernels::SegmentCopy;
using kernels::SegmentDot;

const Device kGpu = Device::cuda(0);
const DType kDtypes[] = {DType::F32, DType::BF16};
constexpr std::int64_t kMax = kernels::kMaxSegments;

Tensor input(const Shape& shape, std::uint64_t seed, DType dt, double lo = -1.0, double hi = 1.0) {
  return kernels::cast(test::random_tensor(shape, seed, lo, hi), dt);
}
Tensor back(const Tensor& t) {
  cuda::device_synchronize(0);
  return t.to(Device::host());
}
std::int64_t packs(std::int64_t segments) { return (segments + kMax - 1) / kMax; }

// src/dst rows of `row_shape`; segments of 0 to 3 rows with gaps between them in dst.
void check_copy(DType dt, const Shape& row_shape, int count, GradMode mode, std::uint64_t seed) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " rows " + shape_str(row_shape) + " " + std::to_string(count) +
               " segments" + (mode == GradMode::Accumulate ? " accumulate" : ""));
  std::vector<SegmentCopy> segments;
  std::int64_t at = 0, live = 0;
  for (int k = 0; k < count; ++k) {
    const std::int64_t n = k % 4;
    segments.push_back({(k * 13) % 97, at, n, 0.5f * static_cast<float>(k % 3 + 1)});
    at += n + (k % 3 == 0 ? 1 : 0);
    live += n > 0;
  }
  Shape src_shape = row_shape, dst_shape = row_shape;
  src_shape.insert(src_shape.begin(), 100);
  dst_shape.insert(dst_shape.begin(), at);
  const Tensor src = input(src_shape, seed, dt);
  Tensor dst = input(dst_shape, seed + 1, dt);
  const Tensor src_d = src.to(kGpu);
  Tensor dst_d = dst.to(kGpu);
  kernels::segment_copy(src, dst, segments, mode);
  EXPECT_EQ(launches_of([&] { kernels::segment_copy(src_d, dst_d, segments, mode); }), packs(live));
  // Rows outside the segments keep their bits on both sides, so the whole tensors compare.
  EXPECT_LT(test::max_rel_error(back(dst_d), dst), dt == DType::F32 ? 1e-6 : 1e-2);
}

TEST(SegmentsCuda, CopyMatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 1;
  for (const DType dt : kDtypes)
    for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate})
      // Rows of 16 values take 16-byte accesses; 3 and 1 do not.
      for (const Shape& row : {Shape{4, 4}, Shape{3}, Shape{}})
        for (const int count : {5, static_cast<int>(2 * kMax + 7)}) check_copy(dt, row, count, mode, seed += 2);
}

TEST(SegmentsCuda, CopyOfUnalignedViews) {
  GPPF_REQUIRE_GPU();
  // Rows of 4 f32 values starting 4 bytes into their storage: no 16-byte accesses.
  const Tensor src = input({37}, 5, DType::F32);
  Tensor dst = input({37}, 6, DType::F32);
  const Tensor src_d = src.to(kGpu);
  Tensor dst_d = dst.to(kGpu);
  auto rows = [](const Tensor& t) { return t.narrow0(1, 36).reshape({9, 4}); };
  Tensor view = rows(dst), view_d = rows(dst_d);
  const std::vector<SegmentCopy> segments = {{1, 0, 4, 1.0f}, {6, 5, 2, -1.0f}};
  kernels::segment_copy(rows(src), view, segments, GradMode::Accumulate);
  kernels::segment_copy(rows(src_d), view_d, segments, GradMode::Accumulate);
  EXPECT_LT(test::max_rel_error(back(dst_d), dst), 1e-6);
}

// Scales read from device memory (SegmentCopy::scale_at): the values there when the kernel runs,
// written after the list was built, as the host given the same values in its memory (16-byte and
// single-value accesses).
TEST(SegmentsCuda, CopyReadsScalesFromDeviceMemory) {
  GPPF_REQUIRE_GPU();
  for (const DType dt : kDtypes)
    for (const Shape& row : {Shape{4, 4}, Shape{3}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " rows " + shape_str(row));
      Shape src_shape = row, dst_shape = row;
      src_shape.insert(src_shape.begin(), 9);
      dst_shape.insert(dst_shape.begin(), 8);
      const Tensor src = input(src_shape, 11, dt), old = input(dst_shape, 12, dt);
      Tensor scales = Tensor::from_vector({2}, {1.0f, 1.0f}), scales_d = scales.to(kGpu);
      const std::vector<SegmentCopy> host = {{0, 1, 2, 9.0f, scales.data_as<float>()},
                                             {5, 4, 3, 9.0f, scales.data_as<float>() + 1}};
      const std::vector<SegmentCopy> device = {{0, 1, 2, 9.0f, scales_d.data_as<float>()},
                                               {5, 4, 3, 9.0f, scales_d.data_as<float>() + 1}};
      const Tensor now = Tensor::from_vector({2}, {0.375f, -1.5f});
      scales.copy_from(now);
      scales_d.copy_from(now);
      for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
        Tensor dst = old.clone(), dst_d = old.to(kGpu);
        kernels::segment_copy(src, dst, host, mode);
        kernels::segment_copy(src.to(kGpu), dst_d, device, mode);
        EXPECT_LT(test::max_rel_error(back(dst_d), dst), dt == DType::F32 ? 1e-6 : 1e-2);
        Tensor by_value = old.clone();
        kernels::segment_copy(src, by_value, {{0, 1, 2, 0.375f}, {5, 4, 3, -1.5f}}, mode);
        EXPECT_EQ(std::memcmp(by_value.data(), dst.data(), dst.nbytes()), 0);
      }
    }
}

TEST(SegmentsCuda, DotMatchesHostAndIsDeterministic) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 100;
  for (const DType dt : kDtypes)
    for (const int count : {4, static_cast<int>(2 * kMax + 5)}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + std::to_string(count) + " segments");
      std::vector<SegmentDot> segments;
      for (int k = 0; k < count; ++k) segments.push_back({(k * 7) % 90, (k * 11) % 80, k % 9, count - 1 - k});
      segments[1] = {0, 100, 2900, count - 2};  // several kDotChunk chunks
      const Tensor a = input({3000, 7}, seed, dt), b = input({3000, 7}, seed + 1, dt);
      const Tensor a_d = a.to(kGpu), b_d = b.to(kGpu);
      Tensor out = Tensor::zeros({count}, DType::F32), out_d = test::random_tensor({count}, seed + 2).to(kGpu);
      kernels::segment_dot(a, b, segments, out);
      const std::int64_t expected = 2 * packs(count);  // every pack has rows: partial sums and fold
      EXPECT_EQ(launches_of([&] { kernels::segment_dot(a_d, b_d, segments, out_d); }), expected);
      const Tensor first = back(out_d);
      EXPECT_LT(test::max_rel_error(first, out), 1e-5);
      EXPECT_EQ(first.data_as<float>()[count - 1], 0.0f);  // segment 0 has no rows
      kernels::segment_dot(a_d, b_d, segments, out_d);
      EXPECT_EQ(std::memcmp(first.data(), back(out_d).data(), first.nbytes()), 0);
      seed += 3;
    }
  // Segments without rows: the fold alone writes their zeros.
  const Tensor a_d = input({4, 3}, 7, DType::F32).to(kGpu);
  Tensor out_d = test::random_tensor({2}, 8).to(kGpu);
  EXPECT_EQ(launches_of([&] { kernels::segment_dot(a_d, a_d, {{0, 0, 0, 0}, {1, 1, 0, 1}}, out_d); }), 1);
  EXPECT_EQ(back(out_d).to_float_vector(), (std::vector<float>{0.0f, 0.0f}));
}

// The affine tensors a segment uses, per role: 0 the call's (null in BatchNormSegment), j > 0 its
// own set j. Segments with the same index share the tensor.
struct AffineUse {
  std::size_t gamma = 0, beta = 0, dgamma = 0, dbeta = 0;
};

AffineUse use_of(const std::vector<AffineUse>& uses, std::size_t k) { return uses.empty() ? AffineUse{} : uses[k]; }

// One tensor per index of each role; index 0 (the call's) undefined when no segment uses it.
struct AffineSets {
  std::vector<Tensor> gamma, beta, dgamma, dbeta;
};

AffineSets affine_sets(const std::vector<AffineUse>& uses, std::size_t n_seg, std::int64_t c, Device device,
                       std::uint64_t seed) {
  AffineSets sets;
  auto fill = [&](std::vector<Tensor>& role, std::size_t AffineUse::*member, double lo, double hi) {
    std::size_t count = 1;
    bool call = false;
    for (std::size_t k = 0; k < n_seg; ++k) {
      count = std::max(count, use_of(uses, k).*member + 1);
      call = call || use_of(uses, k).*member == 0;
    }
    for (std::size_t j = 0; j < count; ++j)
      role.push_back(j > 0 || call ? test::random_tensor({c}, seed++, lo, hi).to(device) : Tensor());
  };
  fill(sets.gamma, &AffineUse::gamma, 0.5, 1.5);
  fill(sets.beta, &AffineUse::beta, -1.0, 1.0);
  fill(sets.dgamma, &AffineUse::dgamma, -1.0, 1.0);
  fill(sets.dbeta, &AffineUse::dbeta, -1.0, 1.0);
  return sets;
}

struct BnSide {
  Tensor x, y, save_mean, save_invstd, dy, dx;
  std::vector<Tensor> rm, rv;
  AffineSets affine;
  std::vector<BatchNormSegment> segments(const std::vector<std::int64_t>& counts, const std::vector<AffineUse>& uses) {
    std::vector<BatchNormSegment> out;
    for (std::size_t k = 0; k < counts.size(); ++k) {
      BatchNormSegment& g = out.emplace_back(BatchNormSegment{counts[k], &rm[k], &rv[k]});
      const AffineUse u = use_of(uses, k);
      if (u.gamma) g.gamma = &affine.gamma[u.gamma];
      if (u.beta) g.beta = &affine.beta[u.beta];
      if (u.dgamma) g.dgamma = &affine.dgamma[u.dgamma];
      if (u.dbeta) g.dbeta = &affine.dbeta[u.dbeta];
    }
    return out;
  }
};

BnSide bn_side(const Shape& shape, std::size_t n_seg, DType dt, Device device, std::uint64_t seed,
               const std::vector<AffineUse>& uses) {
  const std::int64_t c = shape.back(), s = static_cast<std::int64_t>(n_seg);
  BnSide side{input(shape, seed, dt, -1.0, 3.0).to(device),
              Tensor::empty(shape, dt, device),
              Tensor::empty({s, c}, DType::F32, device),
              Tensor::empty({s, c}, DType::F32, device),
              input(shape, seed + 1, dt).to(device),
              Tensor::empty(shape, dt, device),
              {},
              {},
              affine_sets(uses, n_seg, c, device, seed + 2)};
  for (std::size_t k = 0; k < n_seg; ++k) {
    side.rm.push_back(test::random_tensor({c}, seed + 100 + 2 * k).to(device));
    side.rv.push_back(test::random_tensor({c}, seed + 101 + 2 * k, 0.5, 2.0).to(device));
  }
  return side;
}

// Every defined tensor of `d` (on the GPU) within tol of `h`'s.
void expect_close(const std::vector<Tensor>& d, const std::vector<Tensor>& h, double tol, const char* what) {
  for (std::size_t j = 0; j < d.size(); ++j)
    if (d[j].defined()) {
      EXPECT_LT(test::max_rel_error(back(d[j]), h[j]), tol) << what << " " << j;
    }
}

// uses as AffineUse, one per segment; empty: every segment the call's affine tensors.
void check_bn(const Shape& shape, const std::vector<std::int64_t>& counts, DType dt, bool relu, GradMode mode,
              std::uint64_t seed, const std::vector<AffineUse>& uses = {}) {
  SCOPED_TRACE(shape_str(shape) + " " + std::to_string(counts.size()) + " segments " + dtype_name(dt) +
               (relu ? " relu" : "") + (mode == GradMode::Accumulate ? " accumulate" : "") +
               (uses.empty() ? "" : " own affine"));
  const double tol = dt == DType::F32 ? 1e-3 : 2e-2;
  BatchNormParams p;
  p.relu = relu;
  p.momentum = 0.2f;
  BnSide h = bn_side(shape, counts.size(), dt, Device::host(), seed, uses);
  BnSide d = bn_side(shape, counts.size(), dt, kGpu, seed, uses);
  const std::int64_t expected = 3 * packs(static_cast<std::int64_t>(counts.size()));

  kernels::batchnorm_fwd_train_segments(p, h.x, h.affine.gamma[0], h.affine.beta[0], h.segments(counts, uses), h.y,
                                        h.save_mean, h.save_invstd);
  EXPECT_EQ(launches_of([&] {
              kernels::batchnorm_fwd_train_segments(p, d.x, d.affine.gamma[0], d.affine.beta[0],
                                                    d.segments(counts, uses), d.y, d.save_mean, d.save_invstd);
            }),
            expected);
  EXPECT_LT(test::max_rel_error(back(d.y), h.y), tol);
  EXPECT_LT(test::max_rel_error(back(d.save_mean), h.save_mean), 1e-3);
  EXPECT_LT(test::max_rel_error(back(d.save_invstd), h.save_invstd), 1e-3);
  for (std::size_t k = 0; k < counts.size(); ++k) {
    EXPECT_LT(test::max_rel_error(back(d.rm[k]), h.rm[k]), 1e-3) << "running_mean " << k;
    EXPECT_LT(test::max_rel_error(back(d.rv[k]), h.rv[k]), 1e-3) << "running_var " << k;
  }

  kernels::batchnorm_bwd_segments(p, h.x, h.y, h.dy, h.affine.gamma[0], h.segments(counts, uses), h.save_mean,
                                  h.save_invstd, h.dx, h.affine.dgamma[0], h.affine.dbeta[0], mode);
  EXPECT_EQ(launches_of([&] {
              kernels::batchnorm_bwd_segments(p, d.x, d.y, d.dy, d.affine.gamma[0], d.segments(counts, uses),
                                              d.save_mean, d.save_invstd, d.dx, d.affine.dgamma[0], d.affine.dbeta[0],
                                              mode);
            }),
            expected);
  EXPECT_LT(test::max_rel_error(back(d.dx), h.dx), tol);
  expect_close(d.affine.dgamma, h.affine.dgamma, tol, "dgamma");
  expect_close(d.affine.dbeta, h.affine.dbeta, tol, "dbeta");
}

std::vector<std::int64_t> many_counts(std::int64_t segments) {
  std::vector<std::int64_t> counts;
  for (std::int64_t k = 0; k < segments; ++k) counts.push_back(1 + k % 3);
  return counts;
}

std::int64_t sum(const std::vector<std::int64_t>& v) {
  std::int64_t s = 0;
  for (std::int64_t x : v) s += x;
  return s;
}

TEST(SegmentsCuda, BatchNormMatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 1000;
  const auto many = many_counts(2 * kMax + 3);
  for (const DType dt : kDtypes)
    for (const bool relu : {false, true}) {
      check_bn({8, 5, 7, 5}, {3, 1, 4}, dt, relu, GradMode::Overwrite, seed += 100);
      check_bn({16, 28, 28, 64}, {2, 9, 5}, dt, relu, GradMode::Accumulate, seed += 100);
      check_bn({9, 70}, {2, 5, 2}, dt, relu, GradMode::Overwrite, seed += 100);
      check_bn({sum(many), 3, 3, 6}, many, dt, relu, GradMode::Accumulate, seed += 100);
    }
}

// Over more than two packs: gamma and beta cycle through the call's and two of their own; gradient
// targets in runs of 5 segments (one crossing the first packs' boundary) through the call's and two
// of their own, then alternating between two targets first written in the second pack. With
// `paired` false, dbeta keeps the runs there, so its first writers differ from dgamma's.
std::vector<AffineUse> many_uses(std::size_t n, bool paired) {
  std::vector<AffineUse> uses;
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t run = (k / 5) % 3, grad = k >= kMax + 4 ? 3 + k % 2 : run;
    uses.push_back({k % 3, (k + 1) % 3, grad, paired ? grad : run});
  }
  return uses;
}

TEST(SegmentsCuda, BatchNormOwnAffineMatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 5000;
  const auto many = many_counts(2 * kMax + 3);
  // Segments 0 and 2 share their own set, segment 1 uses the call's; then every segment its own
  // (the call's undefined).
  const std::vector<AffineUse> shared_and_call = {{1, 1, 1, 1}, {0, 0, 0, 0}, {1, 1, 1, 1}};
  const std::vector<AffineUse> all_own = {{1, 2, 1, 2}, {2, 1, 2, 1}, {1, 2, 1, 2}};
  for (const DType dt : kDtypes)
    for (const bool relu : {false, true})
      for (const GradMode mode : {GradMode::Overwrite, GradMode::Accumulate}) {
        check_bn({8, 5, 7, 5}, {3, 1, 4}, dt, relu, mode, seed += 100, shared_and_call);
        check_bn({9, 70}, {2, 5, 2}, dt, relu, mode, seed += 100, all_own);
        check_bn({sum(many), 3, 3, 6}, many, dt, relu, mode, seed += 100, many_uses(many.size(), true));
        check_bn({sum(many), 3, 3, 6}, many, dt, relu, mode, seed += 100, many_uses(many.size(), false));
      }
}

TEST(SegmentsCuda, RejectsMixedDevices) {
  GPPF_REQUIRE_GPU();
  const Tensor src = Tensor::zeros({4, 3}, DType::F32, kGpu);
  Tensor dst = Tensor::zeros({4, 3}, DType::F32);
  EXPECT_THROW(kernels::segment_copy(src, dst, {{0, 0, 1, 1.0f}}, GradMode::Overwrite), Error);
  Tensor out = Tensor::zeros({1}, DType::F32);
  EXPECT_THROW(kernels::segment_dot(src, src, {{0, 0, 1, 0}}, out), Error);
  const Tensor x = Tensor::zeros({4, 3}, DType::F32, kGpu), gamma = Tensor::zeros({3}, DType::F32, kGpu);
  Tensor y = Tensor::empty({4, 3}, DType::F32, kGpu), sm = Tensor::empty({1, 3}, DType::F32, kGpu);
  Tensor rm = Tensor::zeros({3}, DType::F32), rv = Tensor::zeros({3}, DType::F32);  // on the host
  EXPECT_THROW(kernels::batchnorm_fwd_train_segments(BatchNormParams{}, x, gamma, gamma, {{4, &rm, &rv}}, y, sm, sm),
               Error);
  // A segment's own affine tensors on the host: one-line errors naming the segment and the tensor.
  Tensor rm_d = rm.to(kGpu), rv_d = rv.to(kGpu), dx = Tensor::empty({4, 3}, DType::F32, kGpu),
         dg = Tensor::zeros({3}, DType::F32, kGpu), dg_host = Tensor::zeros({3}, DType::F32);
  const Tensor beta_host = Tensor::zeros({3}, DType::F32);
  BatchNormSegment g{4, &rm_d, &rv_d};
  g.beta = &beta_host;
  try {
    kernels::batchnorm_fwd_train_segments(BatchNormParams{}, x, gamma, gamma, {g}, y, sm, sm);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("batchnorm_fwd_train_segments: segment 0's beta"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  g = BatchNormSegment{4, nullptr, nullptr};
  g.dgamma = &dg_host;
  try {
    kernels::batchnorm_bwd_segments(BatchNormParams{}, x, y, x, gamma, {g}, sm, sm, dx, dg, dg, GradMode::Overwrite);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("batchnorm_bwd_segments: segment 0's dgamma"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// ---- the task-batched tail: batchnorm_add_relu_segments, segment_dot_bn -------------------------

// Three tasks (rows 0-2, 3-6, 7-9), two route entries, an always-on lego without a slot, a row only
// one entry covers: as tests/elem/test_norm_add.cpp, checked here against the host.
// gates_in_memory: the parts read their gates from memory (NormPart::gate_at; device memory for the
// GPU's parts), written after the parts were built, their `gate` a NaN that must not be read.
void check_fused_tail(DType dt, std::int64_t c, bool unaligned, std::uint64_t seed, bool gates_in_memory = false) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " C=" + std::to_string(c) + (unaligned ? " unaligned" : "") +
               (gates_in_memory ? " gates in memory" : ""));
  const std::int64_t row = 6 * c, off = unaligned ? 1 : 0;
  // An unaligned view starts one value into its storage: no 16-byte accesses.
  auto full = [&](std::int64_t n, std::uint64_t sd, double lo, double hi) {
    return input({n * row + off}, sd, dt, lo, hi);
  };
  auto view = [&](const Tensor& storage) {
    const std::int64_t n = (storage.numel() - off) / row;
    return storage.narrow0(off, n * row).reshape({n, 3, 2, c});
  };
  const Tensor z_full = full(19, seed, -2.0, 2.0), shortcut_full = full(10, seed + 1, -1.0, 1.0);
  const Tensor z = view(z_full), shortcut = view(shortcut_full);
  const Tensor mean = test::random_tensor({6, c}, seed + 2, -0.5, 0.5),
               invstd = test::random_tensor({6, c}, seed + 3, 0.5, 2.0);
  std::vector<Tensor> gamma, beta, gamma_d, beta_d;
  for (std::uint64_t l = 0; l < 3; ++l) {
    gamma.push_back(test::random_tensor({c}, seed + 4 + 2 * l, 0.5, 1.5));
    beta.push_back(test::random_tensor({c}, seed + 5 + 2 * l, -0.5, 0.5));
    gamma_d.push_back(gamma.back().to(kGpu));
    beta_d.push_back(beta.back().to(kGpu));
  }
  const std::int64_t ps[6][6] = {{0, 0, 3, 0, 60, 0}, {3, 3, 4, 1, 30, 2},  {7, 7, 2, 0, 50, 4},
                                 {9, 0, 3, 2, 25, 1}, {12, 3, 4, 0, 70, 3}, {16, 7, 3, 1, 100, -1}};
  std::vector<kernels::NormPart> parts, parts_d;
  Tensor gates = Tensor::zeros({6}, DType::F32), gates_d = Tensor::zeros({6}, DType::F32, kGpu);
  std::vector<float> gate_values;
  for (std::int64_t k = 0; k < 6; ++k) {
    const auto* p = ps[k];
    const auto l = static_cast<std::size_t>(p[3]);
    const float gate = static_cast<float>(p[4]) / 100.0f;
    gate_values.push_back(gate);
    parts.push_back({p[0], p[1], p[2], k, &gamma[l], &beta[l], gate, p[5]});
    parts_d.push_back({p[0], p[1], p[2], k, &gamma_d[l], &beta_d[l], gate, p[5]});
    if (!gates_in_memory) continue;
    parts.back().gate = parts_d.back().gate = std::nanf("");
    parts.back().gate_at = gates.data_as<float>() + k;
    parts_d.back().gate_at = gates_d.data_as<float>() + k;
  }
  gates.copy_from(Tensor::from_vector({6}, gate_values));
  gates_d.copy_from(gates);
  const Tensor z_d = view(z_full.to(kGpu)), shortcut_d = view(shortcut_full.to(kGpu)), mean_d = mean.to(kGpu),
               invstd_d = invstd.to(kGpu);
  Tensor y = Tensor::empty({10, 3, 2, c}, dt), y_d = Tensor::empty({10, 3, 2, c}, dt, kGpu);
  kernels::batchnorm_add_relu_segments(z, mean, invstd, parts, shortcut, y);
  EXPECT_EQ(launches_of([&] { kernels::batchnorm_add_relu_segments(z_d, mean_d, invstd_d, parts_d, shortcut_d, y_d); }),
            1);
  EXPECT_LT(test::max_rel_error(back(y_d), y), dt == DType::F32 ? 1e-5 : 2e-2);
  const Tensor g_full = full(10, seed + 20, -1.0, 1.0), g = view(g_full), g_d = view(g_full.to(kGpu));
  Tensor out = Tensor::zeros({6}, DType::F32), out_d = Tensor::zeros({6}, DType::F32, kGpu);
  kernels::segment_dot_bn(g, z, mean, invstd, parts, out);
  EXPECT_EQ(launches_of([&] { kernels::segment_dot_bn(g_d, z_d, mean_d, invstd_d, parts_d, out_d); }), 2);
  EXPECT_LT(test::max_rel_error(back(out_d), out), dt == DType::F32 ? 1e-5 : 2e-2);
}

TEST(SegmentsCuda, FusedTailMatchesHost) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 300;
  for (const DType dt : kDtypes)
    // 64 and 16 channels take 16-byte accesses (f32: 4 values, bf16: 8), 10 and 3 do not.
    for (const std::int64_t c : {64, 16, 10, 3}) check_fused_tail(dt, c, false, seed += 30);
  check_fused_tail(DType::F32, 64, true, seed += 30);
  for (const DType dt : kDtypes)
    for (const std::int64_t c : {64, 3}) check_fused_tail(dt, c, false, seed += 30, true);
}

}  // namespace
}  // namespace gppf
