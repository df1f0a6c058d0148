// The task-batched strategy: the layer's batch holds several tasks' samples (RunState::segments),
// and each lego runs once, on the samples of every task that routed to it (DESIGN.md, "Where the
// speed must come from": 4 tasks x 64 images at k = 2 of 4 make 4 lego batches of about 128 instead of
// 8 of 64). The legos' batches are stacked in one buffer, so each of the three stages runs one
// convolution per lego and ONE batch norm for all (lego, task) segments: each segment normalised by
// its task's statistics with its lego's affine parameters (kernels/segments.hpp). A task's outputs
// are what its own pass would give.
#include "kernels/elementwise.hpp"
#include "kernels/grouped_gemm.hpp"
#include "kernels/linear.hpp"
#include "kernels/segments.hpp"
#include "src/nn/lego_strategy.hpp"

namespace gppf::nn {
namespace {

// Where one task's samples sit in the layer's batch and in the stacked lego batches.
struct LegoPart {
  std::size_t segment = 0;  // index into RunState::segments
  std::size_t entry = 0;    // index into that task's route
  std::int64_t begin = 0;   // first sample in the layer's batch
  std::int64_t local = 0;   // first sample in the stacked batches
  std::int64_t count = 0;
};

struct LegoRun {
  int lego = 0;
  std::int64_t offset = 0, rows = 0;  // the lego's batch in the stacked batches
  std::vector<LegoPart> parts;
};

struct Stage {
  Tensor z, y;          // the convolutions' outputs (BN input) and the BN's output, stacked
  Tensor mean, invstd;  // [segments, C]
};

struct BatchedSaved final : LegoContext {
  std::vector<Route> routes;  // per segment
  ShortcutSaved shortcut;
  std::vector<LegoRun> runs;
  std::vector<LegoPart> parts;   // every run's, in run order
  std::int64_t max_entries = 0;  // the longest route (dgate slots per segment)
  Tensor in;                     // the stacked lego input (x itself when one lego takes the whole batch)
  bool whole = false;            // one lego over the whole batch in order (a dense layer): no gather
  bool fused = false;            // the last stage ran batchnorm_add_relu_segments (its y is not kept)
  Stage stages[3];
  Tensor y;
};

// A part's copy between the layer's batch and the stacked batches, times its gate when `gated` (read
// from the route table when its route has one).
kernels::SegmentCopy part_copy(const LegoPart& p, const std::vector<Route>& routes, bool gated, bool to_stack) {
  kernels::SegmentCopy c{to_stack ? p.begin : p.local, to_stack ? p.local : p.begin, p.count};
  if (gated) {
    const Route& r = routes[p.segment];
    c.scale = r.gates[p.entry];
    c.scale_at = gate_address(r, p.entry);
  }
  return c;
}

std::vector<kernels::SegmentCopy> to_stack(const std::vector<LegoPart>& parts, const std::vector<Route>& routes,
                                           bool gated) {
  std::vector<kernels::SegmentCopy> c;
  for (const LegoPart& p : parts) c.push_back(part_copy(p, routes, gated, true));
  return c;
}

// Adds the stacked rows back into the layer's batch (gated: times each part's gate). A task's rows
// get one addition per route entry, so each entry is its own call: destinations within a call do
// not overlap (CUDA adds a call's segments concurrently).
void add_from_stack(const Tensor& stack, Tensor& out, const std::vector<LegoPart>& parts,
                    const std::vector<Route>& routes, std::int64_t max_entries, bool gated, const Stream& s) {
  for (std::int64_t j = 0; j < max_entries; ++j) {
    std::vector<kernels::SegmentCopy> c;
    for (const LegoPart& p : parts)
      if (static_cast<std::int64_t>(p.entry) == j) c.push_back(part_copy(p, routes, gated, false));
    kernels::segment_copy(stack, out, c, kernels::GradMode::Accumulate, s);
  }
}

// Where a part's gate gradient goes: max_entries slots per segment; none for an always-on lego.
std::int64_t gate_slot(const BatchedSaved& ctx, const LegoPart& p) {
  if (ctx.routes[p.segment].routed[p.entry] < 0) return -1;
  return static_cast<std::int64_t>(p.segment) * ctx.max_entries + static_cast<std::int64_t>(p.entry);
}

// The last stage's parts for the fused pass, ordered by route entry as add_from_stack adds them (a
// row gets its entries in order); each part's statistics row is its batch-norm segment, i.e. its
// place in ctx.parts.
std::vector<kernels::NormPart> norm_parts(LegoLayer& layer, const BatchedSaved& ctx) {
  std::vector<kernels::NormPart> out;
  for (std::int64_t j = 0; j < ctx.max_entries; ++j) {
    std::int64_t stats = 0;
    for (const LegoRun& run : ctx.runs) {
      BatchNorm& bn = layer.lego(run.lego).bn(3);
      for (const LegoPart& p : run.parts) {
        if (static_cast<std::int64_t>(p.entry) == j) {
          const Route& r = ctx.routes[p.segment];
          out.push_back({p.local, p.begin, p.count, stats, &bn.gamma().value, &bn.beta().value, r.gates[p.entry],
                         gate_slot(ctx, p), gate_address(r, p.entry)});
        }
        ++stats;
      }
    }
  }
  return out;
}

// A 1x1 convolution of stride 1 is a GEMM over [rows, C]: the legos' run as one grouped GEMM.
bool pointwise(const Conv2d& c) {
  const ConvSpec& s = c.spec();
  return s.kernel == 1 && s.stride == 1 && s.padding == 0 && s.groups == 1 && !s.bias;
}

// One GEMM per lego run, C_r = op(A_r) op(B_r) + beta_r C_r, with A, B and C the runs' [rows, *]
// views of stacked tensors, or a lego's weight (w_a / w_b: A or B is the lego's [Cout, Cin] weight
// operand in `dtype`, or its f32 gradient for C).
struct RunGemm {
  bool trans_a = false, trans_b = false;
  std::vector<Tensor> a, b, c;
  std::vector<float> beta;
  void run(const Stream& s) {
    if (c.size() == 1) {  // one lego: a plain GEMM is one launch, the grouped call two
      kernels::gemm(trans_a, trans_b, 1.0f, a[0], b[0], beta[0], c[0], s);
      return;
    }
    std::vector<kernels::GemmProblem> problems;
    for (std::size_t r = 0; r < c.size(); ++r) problems.push_back({&a[r], &b[r], &c[r], beta[r]});
    kernels::grouped_gemm(trans_a, trans_b, 1.0f, problems, s);
  }
};

Tensor rows_of(const Tensor& stacked, std::int64_t offset, std::int64_t rows) {
  const Tensor v = stacked.narrow0(offset, rows);
  return v.reshape({-1, v.dim(-1)});
}

Tensor matrix_of(const Tensor& weight) { return weight.reshape({weight.dim(0), -1}); }

Shape with_batch(Shape s, std::int64_t n) {
  s[0] = n;
  return s;
}

// Stage i's batch-norm segments: each part of each run, its task's statistics, its lego's parameters.
// For the backward, `modes` (one per run) is each lego's gradient mode, taken once.
std::vector<kernels::BatchNormSegment> bn_segments(LegoLayer& layer, const RunState& rs, const BatchedSaved& ctx, int i,
                                                   const std::vector<kernels::GradMode>* modes) {
  std::vector<kernels::BatchNormSegment> segs;
  for (std::size_t r = 0; r < ctx.runs.size(); ++r) {
    BatchNorm& bn = layer.lego(ctx.runs[r].lego).bn(i);
    for (const LegoPart& p : ctx.runs[r].parts) {
      const int task = rs.segments[p.segment].task;
      kernels::BatchNormSegment s{p.count, &bn.running_mean(task), &bn.running_var(task)};
      s.gamma = &bn.gamma().value;
      s.beta = &bn.beta().value;
      s.dgamma = &bn.gamma().grad;
      s.dbeta = &bn.beta().grad;
      if (modes) s.target_mode = (*modes)[r];
      segs.push_back(s);
    }
  }
  return segs;
}

class BatchedStrategy final : public LegoStrategy {
 public:
  const char* name() const override { return "task-batched"; }

  Tensor forward(LegoLayer& layer, const RunState& rs, const Tensor& x, std::int64_t step,
                 std::unique_ptr<LegoContext>& saved) override {
    GPPF_CHECK(!rs.segments.empty() && rs.training, layer.name(),
               ": the task-batched strategy runs training passes of task segments");
    auto ctx = std::make_unique<BatchedSaved>();
    std::vector<std::int64_t> begin;
    std::int64_t n = 0;
    for (const TaskSegment& seg : rs.segments) {
      ctx->routes.push_back(layer.route(seg.task, step, rs.training));
      ctx->max_entries = std::max(ctx->max_entries, static_cast<std::int64_t>(ctx->routes.back().legos.size()));
      begin.push_back(n);
      n += seg.count;
    }
    GPPF_CHECK(x.dim(0) == n, layer.name(), ": input ", x.desc(), " does not hold the ", n,
               " samples of its task segments");
    // Each lego's batch: the samples of the tasks that routed to it, in segment order; stacked.
    std::int64_t stacked = 0;
    for (int lego = 0; lego < layer.num_legos_total(); ++lego) {
      LegoRun run;
      run.lego = lego;
      run.offset = stacked;
      for (std::size_t s = 0; s < rs.segments.size(); ++s) {
        const Route& r = ctx->routes[s];
        for (std::size_t j = 0; j < r.legos.size(); ++j)
          if (r.legos[j] == lego) {
            run.parts.push_back({s, j, begin[s], stacked, rs.segments[s].count});
            stacked += rs.segments[s].count;
          }
      }
      run.rows = stacked - run.offset;
      if (run.parts.empty()) continue;
      ctx->parts.insert(ctx->parts.end(), run.parts.begin(), run.parts.end());
      ctx->runs.push_back(std::move(run));
    }
    // The last stage's batch norm, gated sum and residual ReLU run as one pass when its parts fit one
    // launch; the normalised outputs then exist only inside it.
    ctx->fused = static_cast<int>(ctx->parts.size()) <= kernels::kMaxSegments;
    ctx->whole = ctx->runs.size() == 1 && stacked == n;
    ctx->in = x;
    if (!ctx->whole) {
      ctx->in = Tensor::empty(with_batch(x.shape(), stacked), x.dtype(), x.device());
      kernels::segment_copy(x, ctx->in, to_stack(ctx->parts, ctx->routes, false), kernels::GradMode::Overwrite,
                            rs.stream);
    }
    Tensor h = ctx->in;
    for (int i = 1; i <= 3; ++i) {
      Stage& st = ctx->stages[i - 1];
      Conv2d& first = layer.lego(ctx->runs[0].lego).conv(i);
      st.z = Tensor::empty(with_batch(first.output_shape(h.shape()), stacked), h.dtype(), h.device());
      if (pointwise(first)) {
        RunGemm g;
        g.trans_b = true;
        for (const LegoRun& run : ctx->runs) {
          g.a.push_back(rows_of(h, run.offset, run.rows));
          g.b.push_back(matrix_of(layer.lego(run.lego).conv(i).weight().operand(h.dtype())));
          g.c.push_back(rows_of(st.z, run.offset, run.rows));
          g.beta.push_back(0.0f);
        }
        g.run(rs.stream);
      } else {
        for (const LegoRun& run : ctx->runs) {
          Conv2d& conv = layer.lego(run.lego).conv(i);
          Tensor z = st.z.narrow0(run.offset, run.rows);
          kernels::conv2d_fwd(conv.params(), h.narrow0(run.offset, run.rows), conv.weight().operand(h.dtype()),
                              Tensor(), z, rs.stream);
        }
      }
      const auto segs = bn_segments(layer, rs, *ctx, i, nullptr);
      const std::int64_t C = st.z.dim(-1), S = static_cast<std::int64_t>(segs.size());
      st.mean = Tensor::empty({S, C}, DType::F32, x.device());
      st.invstd = Tensor::empty({S, C}, DType::F32, x.device());
      const bool last_fused = i == 3 && ctx->fused;
      if (!last_fused) st.y = Tensor::empty(st.z.shape(), st.z.dtype(), st.z.device());
      kernels::BatchNormParams p = layer.lego(ctx->runs[0].lego).bn(i).params();
      if (rs.bn_momentum >= 0) p.momentum = rs.bn_momentum;
      kernels::batchnorm_fwd_train_segments(p, st.z, Tensor(), Tensor(), segs, st.y, st.mean, st.invstd, rs.stream);
      h = st.y;
    }
    Tensor y;
    if (ctx->fused) {
      // An identity shortcut is x itself: no copy of it.
      const Tensor shortcut = layer.proj() ? shortcut_forward(layer, rs, x, &ctx->shortcut) : x;
      ctx->shortcut.x_shape = x.shape();
      y = layer.proj() ? shortcut : Tensor::empty(x.shape(), x.dtype(), x.device());
      const Stage& last = ctx->stages[2];
      kernels::batchnorm_add_relu_segments(last.z, last.mean, last.invstd, norm_parts(layer, *ctx), shortcut, y,
                                           rs.stream);
    } else {
      Tensor acc = shortcut_forward(layer, rs, x, &ctx->shortcut);
      add_from_stack(h, acc, ctx->parts, ctx->routes, ctx->max_entries, true, rs.stream);
      y = Tensor::empty(acc.shape(), acc.dtype(), acc.device());
      kernels::relu_fwd(acc, y, rs.stream);
    }
    ctx->y = y;
    saved = std::move(ctx);
    return y;
  }

  Tensor backward(LegoLayer& layer, const RunState& rs, const Tensor& dy, LegoContext& saved) override {
    auto& ctx = static_cast<BatchedSaved&>(saved);
    GPPF_CHECK(ctx.y.defined(), layer.name(), ": backward without a training forward");
    Tensor da = Tensor::empty(ctx.y.shape(), dy.dtype(), dy.device());
    kernels::relu_bwd(ctx.y, dy, da, kernels::GradMode::Overwrite, rs.stream);
    Tensor dx = shortcut_backward(layer, rs, da, ctx.shortcut);
    // dgate: max_entries slots per segment; a shared lego's slot stays 0 (it has no router entry).
    const auto S = static_cast<std::int64_t>(ctx.routes.size());
    Tensor dgate = Tensor::empty({S * ctx.max_entries}, DType::F32, da.device());
    if (layer.spec().num_shared > 0) dgate.zero_(rs.stream);
    const Stage& last = ctx.stages[2];
    if (ctx.fused) {
      kernels::segment_dot_bn(da, last.z, last.mean, last.invstd, norm_parts(layer, ctx), dgate, rs.stream);
    } else {
      std::vector<kernels::SegmentDot> dots;
      for (const LegoPart& p : ctx.parts)
        if (const std::int64_t slot = gate_slot(ctx, p); slot >= 0) dots.push_back({p.begin, p.local, p.count, slot});
      if (!dots.empty()) kernels::segment_dot(da, last.y, dots, dgate, rs.stream);
    }
    Tensor dh = Tensor::empty(last.z.shape(), da.dtype(), da.device());
    kernels::segment_copy(da, dh, to_stack(ctx.parts, ctx.routes, true), kernels::GradMode::Overwrite, rs.stream);
    for (int i = 3; i >= 1; --i) {
      Stage& st = ctx.stages[i - 1];
      std::vector<kernels::GradMode> modes;
      for (const LegoRun& run : ctx.runs) {
        BatchNorm& bn = layer.lego(run.lego).bn(i);
        modes.push_back(bn.gamma().take_grad_mode());
        bn.beta().take_grad_mode();
      }
      const auto segs = bn_segments(layer, rs, ctx, i, &modes);
      const kernels::BatchNormParams p = layer.lego(ctx.runs[0].lego).bn(i).params();
      Tensor dz = Tensor::empty(st.z.shape(), st.z.dtype(), st.z.device());
      Tensor none;
      kernels::batchnorm_bwd_segments(p, st.z, st.y, dh, Tensor(), segs, st.mean, st.invstd, dz, none, none,
                                      kernels::GradMode::Overwrite, rs.stream);
      st = Stage{};
      const Tensor& h = i == 1 ? ctx.in : ctx.stages[i - 2].y;
      // The first stage's input gradient goes straight into dx when the lego took the whole batch.
      const bool into_dx = i == 1 && ctx.whole;
      Tensor din = into_dx ? dx : Tensor::empty(h.shape(), h.dtype(), h.device());
      if (pointwise(layer.lego(ctx.runs[0].lego).conv(i))) {
        RunGemm data, filter;
        filter.trans_a = true;
        for (const LegoRun& run : ctx.runs) {
          Parameter& w = layer.lego(run.lego).conv(i).weight();
          const Tensor dzr = rows_of(dz, run.offset, run.rows);
          data.a.push_back(dzr);
          data.b.push_back(matrix_of(w.operand(dz.dtype())));
          data.c.push_back(rows_of(din, run.offset, run.rows));
          data.beta.push_back(into_dx ? 1.0f : 0.0f);
          if (!w.trainable) continue;
          filter.a.push_back(dzr);
          filter.b.push_back(rows_of(h, run.offset, run.rows));
          filter.c.push_back(matrix_of(w.grad));
          filter.beta.push_back(w.take_grad_mode() == kernels::GradMode::Accumulate ? 1.0f : 0.0f);
        }
        data.run(rs.stream);
        if (!filter.c.empty()) filter.run(rs.stream);
      } else {
        for (const LegoRun& run : ctx.runs) {
          Conv2d& conv = layer.lego(run.lego).conv(i);
          const Tensor dzr = dz.narrow0(run.offset, run.rows);
          Tensor dinr = din.narrow0(run.offset, run.rows);
          kernels::conv2d_bwd_data(conv.params(), dzr, conv.weight().operand(dz.dtype()), dinr,
                                   into_dx ? kernels::GradMode::Accumulate : kernels::GradMode::Overwrite, rs.stream);
          Parameter& w = conv.weight();
          if (w.trainable)
            conv2d_filter_grad(conv.params(), h.narrow0(run.offset, run.rows), dzr, w, nullptr, w.take_grad_mode(),
                               rs.stream);
        }
      }
      dh = din;
    }
    if (!ctx.whole) add_from_stack(dh, dx, ctx.parts, ctx.routes, ctx.max_entries, false, rs.stream);
    for (std::int64_t s = 0; s < S; ++s) {
      const Route& r = ctx.routes[static_cast<std::size_t>(s)];
      const Tensor slots = dgate.narrow0(s * ctx.max_entries, static_cast<std::int64_t>(r.legos.size()));
      layer.accumulate_router_grad(rs.segments[static_cast<std::size_t>(s)].task, r, slots, rs.stream);
    }
    return dx;
  }
};

}  // namespace

std::shared_ptr<LegoStrategy> make_batched_strategy() { return std::make_shared<BatchedStrategy>(); }

}  // namespace gppf::nn
