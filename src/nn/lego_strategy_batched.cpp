// The task-batched strategy: the layer's batch holds several tasks' samples (RunState::segments),
// and each lego runs once, on the samples of every task that routed to it (DESIGN.md, "Where the
// speed must come from": 4 tasks x 64 images at k = 2 of 4 make 4 lego batches of about 128 instead of
// 8 of 64, half the convolution launches, each twice as large). Batch norm keeps each task's
// statistics apart (kernels/segments.hpp), so a task's outputs are what its own pass would give.
#include "kernels/elementwise.hpp"
#include "kernels/segments.hpp"
#include "src/nn/lego_strategy.hpp"

namespace gppf::nn {
namespace {

// Where one task's samples sit in the layer's batch and in one lego's batch.
struct LegoPart {
  std::size_t segment = 0;  // index into RunState::segments
  std::size_t entry = 0;    // index into that task's route
  std::int64_t begin = 0;   // first sample in the layer's batch
  std::int64_t local = 0;   // first sample in the lego's batch
  std::int64_t count = 0;
};

struct LegoRun {
  int lego = 0;
  std::vector<LegoPart> parts;
  std::vector<TaskSegment> segments;  // the lego's batch, in part order
  bool whole = false;                 // the lego's batch is the layer's (no gather)
  Tensor out;                         // the lego's output (its gates' gradients)
  Bottleneck::Saved saved;
};

struct BatchedSaved final : LegoContext {
  std::vector<Route> routes;  // per segment
  ShortcutSaved shortcut;
  std::vector<LegoRun> runs;
  std::int64_t max_entries = 0;  // the longest route (dgate slots per segment)
  Tensor y;
};

std::vector<kernels::SegmentCopy> to_lego(const LegoRun& run, const std::vector<Route>& routes, bool gated) {
  std::vector<kernels::SegmentCopy> c;
  for (const LegoPart& p : run.parts)
    c.push_back({p.begin, p.local, p.count, gated ? routes[p.segment].gates[p.entry] : 1.0f});
  return c;
}

std::vector<kernels::SegmentCopy> from_lego(const LegoRun& run, const std::vector<Route>& routes, bool gated) {
  std::vector<kernels::SegmentCopy> c;
  for (const LegoPart& p : run.parts)
    c.push_back({p.local, p.begin, p.count, gated ? routes[p.segment].gates[p.entry] : 1.0f});
  return c;
}

Shape with_batch(Shape s, std::int64_t n) {
  s[0] = n;
  return s;
}

class BatchedStrategy final : public LegoStrategy {
 public:
  const char* name() const override { return "task-batched"; }

  Tensor forward(LegoLayer& layer, const RunState& rs, const Tensor& x, std::int64_t step,
                 std::unique_ptr<LegoContext>& saved) override {
    GPPF_CHECK(!rs.segments.empty(), layer.name(), ": the task-batched strategy needs task segments");
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
    // Each lego's batch: the samples of the tasks that routed to it, in segment order.
    for (int lego = 0; lego < layer.num_legos_total(); ++lego) {
      LegoRun run;
      run.lego = lego;
      std::int64_t local = 0;
      for (std::size_t s = 0; s < rs.segments.size(); ++s) {
        const Route& r = ctx->routes[s];
        for (std::size_t j = 0; j < r.legos.size(); ++j)
          if (r.legos[j] == lego) {
            run.parts.push_back({s, j, begin[s], local, rs.segments[s].count});
            run.segments.push_back(rs.segments[s]);
            local += rs.segments[s].count;
          }
      }
      if (run.parts.empty()) continue;
      run.whole = run.parts.size() == rs.segments.size();
      ctx->runs.push_back(std::move(run));
    }
    Tensor acc = shortcut_forward(layer, rs, x, rs.training ? &ctx->shortcut : nullptr);
    for (LegoRun& run : ctx->runs) {
      Tensor xi = x;
      if (!run.whole) {
        xi = Tensor::empty(with_batch(x.shape(), run.parts.back().local + run.parts.back().count), x.dtype(),
                           x.device());
        kernels::segment_copy(x, xi, to_lego(run, ctx->routes, false), kernels::GradMode::Overwrite, rs.stream);
      }
      RunState rsi = rs;
      rsi.segments = run.segments;
      Bottleneck& lego = layer.lego(run.lego);
      Tensor o = lego.forward(rsi, xi);
      kernels::segment_copy(o, acc, from_lego(run, ctx->routes, true), kernels::GradMode::Accumulate, rs.stream);
      if (rs.training) {
        run.saved = lego.take_saved();
        run.out = std::move(o);
      }
    }
    Tensor y = Tensor::empty(acc.shape(), acc.dtype(), acc.device());
    kernels::relu_fwd(acc, y, rs.stream);
    if (rs.training) {
      ctx->y = y;
      saved = std::move(ctx);
    }
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
    for (LegoRun& run : ctx.runs) {
      std::vector<kernels::SegmentDot> dots;
      for (const LegoPart& p : run.parts)
        if (ctx.routes[p.segment].routed[p.entry] >= 0)
          dots.push_back({p.begin, p.local, p.count,
                          static_cast<std::int64_t>(p.segment) * ctx.max_entries + static_cast<std::int64_t>(p.entry)});
      if (!dots.empty()) kernels::segment_dot(da, run.out, dots, dgate, rs.stream);
      Tensor scaled = Tensor::empty(run.out.shape(), da.dtype(), da.device());
      kernels::segment_copy(da, scaled, to_lego(run, ctx.routes, true), kernels::GradMode::Overwrite, rs.stream);
      run.out = Tensor();
      RunState rsi = rs;
      rsi.segments = run.segments;
      Bottleneck& lego = layer.lego(run.lego);
      lego.restore_saved(std::move(run.saved));
      if (run.whole) {
        lego.backward(rsi, scaled, dx, kernels::GradMode::Accumulate);
        continue;
      }
      Tensor dxi = Tensor::empty(with_batch(dx.shape(), run.parts.back().local + run.parts.back().count), dx.dtype(),
                                 dx.device());
      lego.backward(rsi, scaled, dxi, kernels::GradMode::Overwrite);
      kernels::segment_copy(dxi, dx, from_lego(run, ctx.routes, false), kernels::GradMode::Accumulate, rs.stream);
    }
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
