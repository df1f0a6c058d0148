// The task-batched lego layer's fused tail (kernels/segments.hpp: batchnorm_add_relu_segments,
// segment_dot_bn, statistics-only batchnorm_fwd_train_segments) on the host: against the double
// reference, bit for bit against the passes they replace (f32), the gate gradients against finite
// differences of the reference, launches, and one-line errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "core/graph.hpp"
#include "kernels/cast.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/ref/segments.hpp"
#include "kernels/segments.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {
using kernels::BatchNormParams;
using kernels::BatchNormSegment;
using kernels::GradMode;
using kernels::NormPart;
using test::launches_of;
using Vec = std::vector<double>;

Tensor input(const Shape& shape, std::uint64_t seed, DType dt, double lo = -1.0, double hi = 1.0) {
  return kernels::cast(test::random_tensor(shape, seed, lo, hi), dt);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.numel() == b.numel() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// A last stage of three tasks (rows 0-2, 3-6 and 7-9 of the layer's batch) over three legos at
// k = 2, the third task's second entry an always-on lego (no slot), a row no first entry covers
// (row 9), and parts ordered by route entry as the strategy orders them. Part k's z rows are
// segment k of the stacked batch norm.
struct Tail {
  static constexpr std::int64_t kRows = 10;
  std::int64_t channels = 0;
  Shape y_shape, z_shape;
  Tensor z, shortcut, mean, invstd;
  std::vector<Tensor> gamma, beta;  // per lego
  std::vector<int> lego;            // per part
  std::vector<NormPart> parts;

  Tail(std::int64_t c, DType dt, std::uint64_t seed) : channels(c) {
    struct P {
      std::int64_t src, dst, count;
      int lego;
      float gate;
      std::int64_t slot;
    };
    const P ps[] = {{0, 0, 3, 0, 0.6f, 0},  {3, 3, 4, 1, 0.3f, 2},  {7, 7, 2, 0, 0.5f, 4},
                    {9, 0, 3, 2, 0.25f, 1}, {12, 3, 4, 0, 0.7f, 3}, {16, 7, 3, 1, 1.0f, -1}};
    y_shape = {kRows, 3, 2, c};
    z_shape = {19, 3, 2, c};
    z = input(z_shape, seed, dt, -2.0, 2.0);
    shortcut = input(y_shape, seed + 1, dt);
    mean = test::random_tensor({6, c}, seed + 2, -0.5, 0.5);
    invstd = test::random_tensor({6, c}, seed + 3, 0.5, 2.0);
    for (int l = 0; l < 3; ++l) {
      gamma.push_back(test::random_tensor({c}, seed + 4 + 2 * static_cast<std::uint64_t>(l), 0.5, 1.5));
      beta.push_back(test::random_tensor({c}, seed + 5 + 2 * static_cast<std::uint64_t>(l), -0.5, 0.5));
    }
    std::int64_t stats = 0;
    for (const P& p : ps) {
      lego.push_back(p.lego);
      parts.push_back({p.src, p.dst, p.count, stats++, &gamma[static_cast<std::size_t>(p.lego)],
                       &beta[static_cast<std::size_t>(p.lego)], p.gate, p.slot});
    }
  }
  std::int64_t row() const { return y_shape[1] * y_shape[2] * channels; }
  std::vector<Vec> per_part(const std::vector<Tensor>& t) const {
    std::vector<Vec> out;
    for (int l : lego) out.push_back(test::to_double(t[static_cast<std::size_t>(l)]));
    return out;
  }
  Vec reference_y(const std::vector<NormPart>& with) const {
    Vec y;
    kernels::ref::batchnorm_add_relu_segments(row(), channels, test::to_double(z), test::to_double(mean),
                                              test::to_double(invstd), with, per_part(gamma), per_part(beta),
                                              test::to_double(shortcut), y);
    return y;
  }
};

TEST(FusedTail, MatchesReference) {
  std::uint64_t seed = 10;
  for (const DType dt : {DType::F32, DType::BF16})
    for (const std::int64_t c : {8, 3}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " C=" + std::to_string(c));
      Tail t(c, dt, seed += 10);
      Tensor y = Tensor::empty(t.y_shape, dt);
      kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, t.parts, t.shortcut, y);
      const Vec expect = t.reference_y(t.parts);
      // bf16: inputs are bf16 values (the reference reads the same), the output is rounded once.
      EXPECT_LT(test::max_rel_error(test::to_double(y), expect), dt == DType::F32 ? 2e-6 : 8e-3);
      // Row 9 has one part only, and every row is written.
      Tensor in_place = t.shortcut.clone();
      kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, t.parts, in_place, in_place);
      EXPECT_TRUE(same_bits(in_place, y)) << "y may be the shortcut itself";
    }
}

TEST(FusedTail, NoPartsIsTheReluOfTheShortcut) {
  Tail t(4, DType::F32, 3);
  Tensor y = Tensor::empty(t.y_shape, DType::F32), expect = Tensor::empty(t.y_shape, DType::F32);
  kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, {}, t.shortcut, y);
  kernels::relu_fwd(t.shortcut, expect);
  EXPECT_TRUE(same_bits(y, expect));
}

// The passes the fused ones replace (lego_strategy_batched.cpp before): the full segment batch norm
// writing the normalised z, each route entry's parts added to a copy of the shortcut, the ReLU; and
// the gate gradients as segment_dot over the normalised z. In f32 the fused passes give the same bits,
// and the statistics-only batch norm the same statistics with one launch fewer.
TEST(FusedTail, BitForBitAsThePassesItReplaces) {
  for (const std::int64_t c : {8, 5}) {
    SCOPED_TRACE("C=" + std::to_string(c));
    Tail t(c, DType::F32, 40 + static_cast<std::uint64_t>(c));
    std::vector<Tensor> rm, rv, rm2, rv2;
    std::vector<BatchNormSegment> segs, segs2;
    for (std::size_t k = 0; k < t.parts.size(); ++k) {
      rm.push_back(test::random_tensor({c}, 100 + k, -1.0, 1.0));
      rv.push_back(test::random_tensor({c}, 200 + k, 0.5, 2.0));
    }
    for (std::size_t k = 0; k < t.parts.size(); ++k) {
      rm2.push_back(rm[k].clone());
      rv2.push_back(rv[k].clone());
    }
    for (std::size_t k = 0; k < t.parts.size(); ++k) {
      BatchNormSegment s{t.parts[k].count, &rm[k], &rv[k]};
      s.gamma = t.parts[k].gamma;
      s.beta = t.parts[k].beta;
      segs.push_back(s);
      s.running_mean = &rm2[k];
      s.running_var = &rv2[k];
      segs2.push_back(s);
    }
    const BatchNormParams p;
    const std::int64_t n_seg = static_cast<std::int64_t>(segs.size());
    Tensor ybn = Tensor::empty(t.z_shape, DType::F32), sm = Tensor::empty({n_seg, c}, DType::F32),
           si = Tensor::empty({n_seg, c}, DType::F32);
    Tensor sm2 = Tensor::empty({n_seg, c}, DType::F32), si2 = Tensor::empty({n_seg, c}, DType::F32), none;
    EXPECT_EQ(
        launches_of([&] { kernels::batchnorm_fwd_train_segments(p, t.z, Tensor(), Tensor(), segs, ybn, sm, si); }), 3);
    EXPECT_EQ(
        launches_of([&] { kernels::batchnorm_fwd_train_segments(p, t.z, Tensor(), Tensor(), segs2, none, sm2, si2); }),
        2);
    EXPECT_TRUE(same_bits(sm, sm2) && same_bits(si, si2));
    for (std::size_t k = 0; k < segs.size(); ++k) EXPECT_TRUE(same_bits(rm[k], rm2[k]) && same_bits(rv[k], rv2[k]));

    Tensor acc = t.shortcut.clone(), before = Tensor::empty(t.y_shape, DType::F32);
    for (const std::int64_t first : {0, 3}) {  // the two route entries
      std::vector<kernels::SegmentCopy> entry;
      for (std::int64_t k = first; k < first + 3; ++k) {
        const NormPart& q = t.parts[static_cast<std::size_t>(k)];
        entry.push_back({q.src, q.dst, q.count, q.gate});
      }
      kernels::segment_copy(ybn, acc, entry, GradMode::Accumulate);
    }
    kernels::relu_fwd(acc, before);
    Tensor y = Tensor::empty(t.y_shape, DType::F32);
    EXPECT_EQ(launches_of([&] { kernels::batchnorm_add_relu_segments(t.z, sm2, si2, t.parts, t.shortcut, y); }), 1);
    EXPECT_TRUE(same_bits(y, before)) << "max rel error "
                                      << test::max_rel_error(test::to_double(y), test::to_double(before));

    const Tensor g = input(t.y_shape, 77, DType::F32);
    std::vector<kernels::SegmentDot> dots;
    for (const NormPart& q : t.parts)
      if (q.slot >= 0) dots.push_back({q.dst, q.src, q.count, q.slot});
    Tensor d_old = Tensor::zeros({6}, DType::F32), d_new = Tensor::zeros({6}, DType::F32);
    kernels::segment_dot(g, ybn, dots, d_old);
    EXPECT_EQ(launches_of([&] { kernels::segment_dot_bn(g, t.z, sm2, si2, t.parts, d_new); }), 2);
    EXPECT_TRUE(same_bits(d_old, d_new));
    EXPECT_EQ(d_new.data_as<float>()[5], 0.0f) << "slot 5 belongs to no part";
  }
}

// d/d gate_k of L = sum(w * y) is segment_dot_bn of g = w where the output is positive: against
// central differences of the double reference (also checks the reference's forward).
TEST(FusedTail, GateGradientsMatchFiniteDifferences) {
  for (const DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tail t(6, dt, 90);
    const Vec w = test::random_vector(static_cast<std::size_t>(Tail::kRows * t.row()), 91);
    const Vec y = t.reference_y(t.parts);
    Vec gv(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) gv[i] = y[i] > 0.0 ? w[i] : 0.0;
    const Tensor g = kernels::cast(Tensor::from_vector(t.y_shape, test::to_float(gv)), dt);
    Tensor dgate = Tensor::zeros({6}, DType::F32);
    kernels::segment_dot_bn(g, t.z, t.mean, t.invstd, t.parts, dgate);
    auto loss = [&](const std::vector<NormPart>& parts) {
      const Vec yy = t.reference_y(parts);
      double s = 0.0;
      for (std::size_t i = 0; i < w.size(); ++i) s += w[i] * yy[i];
      return s;
    };
    const double h = 1e-6;
    for (std::size_t k = 0; k < t.parts.size(); ++k) {
      if (t.parts[k].slot < 0) continue;
      std::vector<NormPart> up = t.parts, down = t.parts;
      // The gates are f32 in the op; the reference reads them as double, so the step is exact.
      up[k].gate += static_cast<float>(h);
      down[k].gate -= static_cast<float>(h);
      const double step = double(up[k].gate) - double(down[k].gate);
      const double fd = (loss(up) - loss(down)) / step;
      const double got = dgate.data_as<float>()[t.parts[k].slot];
      // bf16: g is rounded to bf16 before the dot.
      EXPECT_NEAR(got, fd, (dt == DType::F32 ? 1e-4 : 2e-2) * std::max(1.0, std::abs(fd))) << "part " << k;
    }
  }
}

// Gates read from memory (NormPart::gate_at: the step's route table), set after the parts were
// built: bit for bit the pass given those gates by value (f32 and bf16), the reference reads them too,
// `gate` is then neither read nor checked, and the gate gradients (which read no gate) are unchanged.
TEST(FusedTail, GatesReadFromMemory) {
  for (const DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tail t(8, dt, 120);
    std::vector<float> gates(t.parts.size(), 1.0f);
    std::vector<NormPart> from_memory = t.parts, by_value = t.parts;
    for (std::size_t k = 0; k < t.parts.size(); ++k) {
      from_memory[k].gate = std::nanf("");
      from_memory[k].gate_at = &gates[k];
    }
    for (std::size_t k = 0; k < t.parts.size(); ++k) by_value[k].gate = gates[k] = 0.15f * static_cast<float>(k) - 0.2f;
    Tensor a = Tensor::empty(t.y_shape, dt), b = Tensor::empty(t.y_shape, dt);
    kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, from_memory, t.shortcut, a);
    kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, by_value, t.shortcut, b);
    EXPECT_TRUE(same_bits(a, b));
    EXPECT_EQ(t.reference_y(from_memory), t.reference_y(by_value));
    const Tensor g = input(t.y_shape, 121, dt);
    Tensor da = Tensor::zeros({6}, DType::F32), db = Tensor::zeros({6}, DType::F32);
    kernels::segment_dot_bn(g, t.z, t.mean, t.invstd, from_memory, da);
    kernels::segment_dot_bn(g, t.z, t.mean, t.invstd, by_value, db);
    EXPECT_TRUE(same_bits(da, db));
  }
}

// Recorded on the host (core/graph.hpp): a replay reads the gates then in memory and uses the gamma
// and beta tensors of the capture, whatever the caller's part list and Tensor objects hold since.
TEST(FusedTail, HostGraphReadsTheGatesThenInMemory) {
  Tail t(8, DType::F32, 130);
  const Tail eager(8, DType::F32, 130);  // the same values
  std::vector<float> gates(t.parts.size(), 0.5f);
  Tensor y = Tensor::empty(t.y_shape, DType::F32), out = Tensor::zeros({6}, DType::F32);
  const Tensor g = input(t.y_shape, 131, DType::F32);
  runtime::Graph graph;
  {
    std::vector<NormPart> parts = t.parts;
    for (std::size_t k = 0; k < parts.size(); ++k) parts[k].gate_at = &gates[k];
    graph.begin_capture(Stream::host());
    kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, parts, t.shortcut, y);
    kernels::segment_dot_bn(g, t.z, t.mean, t.invstd, parts, out);
    graph.end_capture();
    parts.clear();
  }
  for (Tensor& x : t.gamma) x = Tensor::zeros(x.shape(), DType::F32);  // the parts pointed here
  for (Tensor& x : t.beta) x = Tensor::zeros(x.shape(), DType::F32);
  std::vector<NormPart> want = eager.parts;
  for (std::size_t k = 0; k < gates.size(); ++k) want[k].gate = gates[k] = 0.1f + 0.2f * static_cast<float>(k);
  graph.launch();
  Tensor y_want = Tensor::empty(t.y_shape, DType::F32), out_want = Tensor::zeros({6}, DType::F32);
  kernels::batchnorm_add_relu_segments(eager.z, eager.mean, eager.invstd, want, eager.shortcut, y_want);
  kernels::segment_dot_bn(g, eager.z, eager.mean, eager.invstd, want, out_want);
  EXPECT_TRUE(same_bits(y, y_want));
  EXPECT_TRUE(same_bits(out, out_want));
}

TEST(FusedTail, BadArgumentsGiveOneLineErrors) {
  Tail t(4, DType::F32, 7);
  Tensor y = Tensor::empty(t.y_shape, DType::F32), out = Tensor::zeros({6}, DType::F32);
  auto expect_error = [](const std::function<void()>& f, const std::string& also) {
    const std::string msg = test::error_of(f);
    EXPECT_NE(msg.find(also), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  };
  auto with = [&](auto change) {
    std::vector<NormPart> parts = t.parts;
    change(parts);
    return parts;
  };
  const auto bad_stats = with([](auto& p) { p[2].stats = 6; });
  expect_error([&] { kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, bad_stats, t.shortcut, y); },
               "batchnorm_add_relu_segments: part 2 reads statistics row 6");
  const auto no_gamma = with([](auto& p) { p[1].gamma = nullptr; });
  expect_error([&] { kernels::segment_dot_bn(y, t.z, t.mean, t.invstd, no_gamma, out); },
               "segment_dot_bn: part 1 has no gamma or beta");
  const auto past_z = with([](auto& p) { p[5].count = 4; });
  expect_error([&] { kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, past_z, t.shortcut, y); },
               "reads rows [16, 20) of z");
  const auto twice = with([](auto& p) { p[3].slot = 0; });
  expect_error([&] { kernels::segment_dot_bn(y, t.z, t.mean, t.invstd, twice, out); }, "two parts write slot 0");
  const auto nan_gate = with([](auto& p) { p[0].gate = std::nanf(""); });
  expect_error([&] { kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, nan_gate, t.shortcut, y); },
               "part 0 has gate nan");
  std::vector<NormPart> many;
  for (int k = 0; k <= kernels::kMaxSegments; ++k) many.push_back(t.parts[0]);
  expect_error([&] { kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, many, t.shortcut, y); },
               "33 parts, at most 32");
  Tensor narrow = Tensor::empty({Tail::kRows, 3, 2, 3}, DType::F32);
  expect_error([&] { kernels::batchnorm_add_relu_segments(t.z, t.mean, t.invstd, t.parts, narrow, narrow); },
               "differ in size");
}

}  // namespace
}  // namespace gppf
