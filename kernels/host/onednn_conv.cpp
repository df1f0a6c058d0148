// Host convolutions through oneDNN primitives. Activations stay NHWC (no reorders of the large
// tensors); weights are OHWI in memory and are reordered into whichever layout the primitive picked
// (its blocked weight layouts are what its fastest AVX2/AVX-512 JIT kernels read). Primitives and
// reorders are built once per (pass, shape, params) and cached: creating one costs milliseconds.
#include <omp.h>

#include <algorithm>
#include <compare>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/conv.hpp"

namespace gppf::kernels::onednn {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

enum class Pass : int { Fwd, BwdData, BwdFilter };

struct Key {
  Pass pass;
  bool bias;
  std::int64_t n, h, w, c, k, r, s;
  int sh, sw, ph, pw, dh, dw, groups;
  auto operator<=>(const Key&) const = default;
};

Key make_key(Pass pass, bool bias, const Conv2dParams& p, const Conv2dGeometry& g) {
  return {pass, bias,       g.n,        g.h,     g.w,     g.c,          g.k,          g.r,
          g.s,  p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, p.groups};
}

memory::desc x_md(const Conv2dGeometry& g) { return {{g.n, g.c, g.h, g.w}, Dt::f32, Tag::nhwc}; }
memory::desc y_md(const Conv2dGeometry& g) { return {{g.n, g.k, g.p, g.q}, Dt::f32, Tag::nhwc}; }
memory::desc w_md(const Conv2dGeometry& g, bool any) {
  if (g.groups == 1) return {{g.k, g.c, g.r, g.s}, Dt::f32, any ? Tag::any : Tag::ohwi};
  return {{g.groups, g.kg(), g.cg(), g.r, g.s}, Dt::f32, any ? Tag::any : Tag::gohwi};
}
memory::desc b_md(const Conv2dGeometry& g) { return {{g.k}, Dt::f32, Tag::a}; }

struct Geometry {
  memory::dims strides, dilates, pad_l, pad_r;
};
Geometry dnnl_geometry(const Conv2dParams& p) {
  // oneDNN counts dilation from 0 (a dense filter has dilation 0).
  return {{p.stride_h, p.stride_w}, {p.dilation_h - 1, p.dilation_w - 1}, {p.pad_h, p.pad_w}, {p.pad_h, p.pad_w}};
}

dnnl::convolution_forward::primitive_desc fwd_pd(const Conv2dParams& p, const Conv2dGeometry& g, bool bias) {
  const Geometry d = dnnl_geometry(p);
  const auto desc =
      bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                             x_md(g), w_md(g, true), b_md(g), y_md(g), d.strides, d.dilates, d.pad_l,
                                             d.pad_r)
           : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                             x_md(g), w_md(g, true), y_md(g), d.strides, d.dilates, d.pad_l, d.pad_r);
  return {desc, engine()};
}

// One cached primitive with its weight reorders and scratch buffers. The mutex serialises callers
// that share a plan (the buffers are the plan's own).
struct Plan {
  std::mutex mutex;
  dnnl::stream stream{engine()};
  dnnl::primitive prim;
  memory::desc w_user;
  memory::desc w_prim;
  bool reorder_w = false;
  dnnl::reorder w_reorder;      // fwd, bwd-data: user -> primitive; bwd-filter: primitive -> user
  dnnl::reorder w_reorder_add;  // bwd-filter, accumulate: user += primitive
  memory w_mem;                 // weights (or their gradient) in the primitive's layout
  std::vector<float> tmp;       // bwd-data/bwd-filter accumulate: the fresh gradient before it is added
  std::vector<float> tmp_bias;
  // Memory objects over the caller's buffers, re-pointed on every call (cheaper than building them).
  memory x_mem, y_mem, w_user_mem, b_mem;
};

std::unique_ptr<Plan> make_plan(const Key& key, const Conv2dParams& p, const Conv2dGeometry& g) {
  auto plan = std::make_unique<Plan>();
  plan->w_user = w_md(g, false);
  const Geometry d = dnnl_geometry(p);
  const auto hint = fwd_pd(p, g, key.bias && key.pass == Pass::Fwd);
  memory::desc w_prim;
  if (key.pass == Pass::Fwd) {
    plan->prim = dnnl::convolution_forward(hint);
    w_prim = hint.weights_desc();
  } else if (key.pass == Pass::BwdData) {
    const dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, x_md(g), w_md(g, true),
                                                     y_md(g), d.strides, d.dilates, d.pad_l, d.pad_r);
    const dnnl::convolution_backward_data::primitive_desc pd(desc, engine(), hint);
    plan->prim = dnnl::convolution_backward_data(pd);
    w_prim = pd.weights_desc();
  } else {
    const auto desc =
        key.bias ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, x_md(g), w_md(g, true),
                                                            b_md(g), y_md(g), d.strides, d.dilates, d.pad_l, d.pad_r)
                 : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, x_md(g), w_md(g, true),
                                                            y_md(g), d.strides, d.dilates, d.pad_l, d.pad_r);
    const dnnl::convolution_backward_weights::primitive_desc pd(desc, engine(), hint);
    plan->prim = dnnl::convolution_backward_weights(pd);
    w_prim = pd.diff_weights_desc();
  }
  plan->w_prim = w_prim;
  plan->x_mem = memory(x_md(g), engine(), DNNL_MEMORY_NONE);
  plan->y_mem = memory(y_md(g), engine(), DNNL_MEMORY_NONE);
  plan->w_user_mem = memory(plan->w_user, engine(), DNNL_MEMORY_NONE);
  plan->b_mem = memory(b_md(g), engine(), DNNL_MEMORY_NONE);
  plan->reorder_w = w_prim != plan->w_user;
  if (plan->reorder_w) {
    plan->w_mem = memory(w_prim, engine());
    if (key.pass == Pass::BwdFilter) {
      plan->w_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), w_prim, engine(), plan->w_user));
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      dnnl::primitive_attr attr;
      attr.set_post_ops(ops);
      plan->w_reorder_add =
          dnnl::reorder(dnnl::reorder::primitive_desc(engine(), w_prim, engine(), plan->w_user, attr));
    } else {
      plan->w_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), plan->w_user, engine(), w_prim));
    }
  }
  return plan;
}

Plan& plan_for(Pass pass, bool bias, const Conv2dParams& p, const Conv2dGeometry& g) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  const Key key = make_key(pass, bias, p, g);
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = plans[key];
  if (!slot) slot = make_plan(key, p, g);
  return *slot;
}

// Runs a weight reorder; small ones on the calling thread alone (oneDNN's OpenMP runtime sizes each
// parallel region from omp_get_max_threads()): one fork/join fewer per call, which a loaded machine
// makes expensive, for a copy of a few hundred KiB that one core does in microseconds.
constexpr std::size_t kSerialReorderBytes = std::size_t{1} << 20;
void run_reorder(Plan& plan, dnnl::reorder& r, memory& src, memory& dst) {
  struct SerialScope {  // restores the thread count even when execute throws
    int threads = omp_get_max_threads();
    SerialScope() { omp_set_num_threads(1); }
    ~SerialScope() { omp_set_num_threads(threads); }
  };
  if (plan.w_user.get_size() > kSerialReorderBytes) {
    r.execute(plan.stream, src, dst);
    return;
  }
  const SerialScope serial;
  r.execute(plan.stream, src, dst);
}

memory& point(memory& m, const float* ptr) {
  m.set_data_handle(const_cast<float*>(ptr));
  return m;
}

void add_into(float* dst, const float* src, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace

void conv2d_fwd(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* w, const float* bias,
                float* y) {
  Plan& plan = plan_for(Pass::Fwd, bias != nullptr, p, g);
  std::lock_guard<std::mutex> lock(plan.mutex);
  memory w_mem = point(plan.w_user_mem, w);
  if (plan.reorder_w) {
    run_reorder(plan, plan.w_reorder, w_mem, plan.w_mem);
    w_mem = plan.w_mem;
  }
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, point(plan.x_mem, x)}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, point(plan.y_mem, y)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, point(plan.b_mem, bias));
  plan.prim.execute(plan.stream, args);
  plan.stream.wait();
}

namespace {

// A strided, unpadded 1x1 convolution touches every stride-th input pixel only; its backward passes
// run as the stride-1 problem on those pixels (unit_stride), around oneDNN's strided 1x1 paths.
bool strided_pointwise(const Conv2dParams& p, const Conv2dGeometry& g) {
  return g.r == 1 && g.s == 1 && p.pad_h == 0 && p.pad_w == 0 && (p.stride_h > 1 || p.stride_w > 1);
}

std::pair<Conv2dParams, Conv2dGeometry> unit_stride(const Conv2dParams& p, const Conv2dGeometry& g) {
  Conv2dParams p1 = p;
  p1.stride_h = p1.stride_w = 1;
  Conv2dGeometry g1 = g;
  g1.h = g.p;
  g1.w = g.q;
  return {p1, g1};
}

}  // namespace

void conv2d_bwd_data(const Conv2dParams& p, const Conv2dGeometry& g, const float* dy, const float* w, float* dx,
                     GradMode mode) {
  if (strided_pointwise(p, g)) {
    // A strided 1x1 (a projection shortcut) sends gradient to every stride-th pixel only. oneDNN ran
    // these at a quarter of the stride-1 rate (docs/PERFORMANCE.md): solve the stride-1 problem on
    // the pixels that get a gradient, then spread it out (zeros in between when overwriting).
    const auto unit = unit_stride(p, g);
    const Conv2dParams& p1 = unit.first;
    const Conv2dGeometry& g1 = unit.second;
    thread_local std::vector<float> dense;
    dense.resize(static_cast<std::size_t>(g.n * g.p * g.q * g.c));
    conv2d_bwd_data(p1, g1, dy, w, dense.data(), GradMode::Overwrite);
    const bool acc = mode == GradMode::Accumulate;
    const float* src = dense.data();
#pragma omp parallel for schedule(static)
    for (std::int64_t row = 0; row < g.n * g.h; ++row) {
      const std::int64_t n = row / g.h, h = row % g.h;
      float* out = dx + row * g.w * g.c;
      const bool hit_h = h % p.stride_h == 0 && h / p.stride_h < g.p;
      for (std::int64_t x = 0; x < g.w; ++x) {
        float* o = out + x * g.c;
        if (hit_h && x % p.stride_w == 0 && x / p.stride_w < g.q) {
          const float* in = src + ((n * g.p + h / p.stride_h) * g.q + x / p.stride_w) * g.c;
          for (std::int64_t c = 0; c < g.c; ++c) o[c] = acc ? o[c] + in[c] : in[c];
        } else if (!acc) {
          std::fill(o, o + g.c, 0.0f);
        }
      }
    }
    return;
  }
  Plan& plan = plan_for(Pass::BwdData, false, p, g);
  std::lock_guard<std::mutex> lock(plan.mutex);
  memory w_mem = point(plan.w_user_mem, w);
  if (plan.reorder_w) {
    run_reorder(plan, plan.w_reorder, w_mem, plan.w_mem);
    w_mem = plan.w_mem;
  }
  const std::int64_t nx = g.n * g.h * g.w * g.c;
  float* out = dx;
  if (mode == GradMode::Accumulate) {
    plan.tmp.resize(static_cast<std::size_t>(nx));
    out = plan.tmp.data();
  }
  plan.prim.execute(plan.stream, {{DNNL_ARG_DIFF_DST, point(plan.y_mem, dy)},
                                  {DNNL_ARG_WEIGHTS, w_mem},
                                  {DNNL_ARG_DIFF_SRC, point(plan.x_mem, out)}});
  plan.stream.wait();
  if (mode == GradMode::Accumulate) add_into(dx, out, nx);
}

void conv2d_bwd_filter(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* dy, float* dw,
                       float* dbias, GradMode mode) {
  if (strided_pointwise(p, g)) {
    // A strided 1x1 reads every stride-th pixel only: gather those and solve the stride-1 problem.
    // oneDNN 2.6's own gather (jit_1x1 "rtus", nhwc, fewer input channels than its channel block)
    // writes past its scratchpad and corrupted the heap (docs/RELIABILITY.md).
    const auto unit = unit_stride(p, g);
    const Conv2dParams& p1 = unit.first;
    const Conv2dGeometry& g1 = unit.second;
    thread_local std::vector<float> dense;
    dense.resize(static_cast<std::size_t>(g.n * g.p * g.q * g.c));
    float* dst = dense.data();
#pragma omp parallel for schedule(static)
    for (std::int64_t row = 0; row < g.n * g.p; ++row) {
      const std::int64_t n = row / g.p, h = (row % g.p) * p.stride_h;
      for (std::int64_t q = 0; q < g.q; ++q)
        std::copy_n(x + ((n * g.h + h) * g.w + q * p.stride_w) * g.c, g.c, dst + (row * g.q + q) * g.c);
    }
    conv2d_bwd_filter(p1, g1, dense.data(), dy, dw, dbias, mode);
    return;
  }
  Plan& plan = plan_for(Pass::BwdFilter, dbias != nullptr, p, g);
  std::lock_guard<std::mutex> lock(plan.mutex);
  const bool acc = mode == GradMode::Accumulate;
  const std::int64_t nw = g.k * g.r * g.s * g.cg();
  // Where the primitive writes dw: its own layout (then reordered onto dw, adding when accumulating),
  // or dw itself, or a buffer that is then added to dw.
  const bool via_tmp = !plan.reorder_w && acc;
  if (via_tmp) plan.tmp.resize(static_cast<std::size_t>(nw));
  memory dw_user = point(plan.w_user_mem, via_tmp ? plan.tmp.data() : dw);
  memory dw_mem = plan.reorder_w ? plan.w_mem : dw_user;
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, point(plan.x_mem, x)},
                                       {DNNL_ARG_DIFF_DST, point(plan.y_mem, dy)},
                                       {DNNL_ARG_DIFF_WEIGHTS, dw_mem}};
  float* db = dbias;
  if (dbias && acc) {
    plan.tmp_bias.resize(static_cast<std::size_t>(g.k));
    db = plan.tmp_bias.data();
  }
  if (dbias) args.emplace(DNNL_ARG_DIFF_BIAS, point(plan.b_mem, db));
  plan.prim.execute(plan.stream, args);
  if (plan.reorder_w) run_reorder(plan, acc ? plan.w_reorder_add : plan.w_reorder, plan.w_mem, dw_user);
  plan.stream.wait();
  if (via_tmp) add_into(dw, plan.tmp.data(), nw);
  if (dbias && acc) add_into(dbias, db, g.k);
}

}  // namespace gppf::kernels::onednn
