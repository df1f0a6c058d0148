// Host conv2d GFLOP/s on ResNet shapes (NHWC, batch 8). BM_Conv_<pass>/<shape> runs ours
// (kernels::conv2d_*, weight reorders included) and oneDNN called directly on the same shape in its
// best setting (NHWC activations, weights already in the layout the primitive asked for) alternately
// in one loop, and reports both rates from median times and their ratio (target: ours >= 85%).
// BM_Gemm_<pass>/<shape> is the im2col + SGEMM fallback that builds without oneDNN run.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/conv.hpp"
#ifdef GPPF_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

using gppf::DType;
using gppf::Shape;
using gppf::Tensor;
namespace k = gppf::kernels;

struct ConvShape {
  const char* name;
  std::int64_t n, h, w, c, k, r;
  int stride, pad, groups;
};

// ResNet-50 stage shapes (3x3 and 1x1), a lego-style grouped 3x3 and a small per-task convolution.
const std::vector<ConvShape>& shapes() {
  static const std::vector<ConvShape> v{
      {"56x56x64_3x3", 8, 56, 56, 64, 64, 3, 1, 1, 1},
      {"28x28x128_3x3", 8, 28, 28, 128, 128, 3, 1, 1, 1},
      {"14x14x256_3x3", 8, 14, 14, 256, 256, 3, 1, 1, 1},
      {"7x7x512_3x3", 8, 7, 7, 512, 512, 3, 1, 1, 1},
      {"56x56x64-256_1x1", 8, 56, 56, 64, 256, 1, 1, 0, 1},
      {"56x56x256-64_1x1", 8, 56, 56, 256, 64, 1, 1, 0, 1},
      {"28x28x128_3x3_g2", 8, 28, 28, 128, 128, 3, 1, 1, 2},
      // The weight-heavy shape at a larger batch: the per-call weight reorder amortised.
      {"b32_7x7x512_3x3", 32, 7, 7, 512, 512, 3, 1, 1, 1},
      // A small per-task lego convolution: call overhead shows here.
      {"b2_14x14x64_3x3", 2, 14, 14, 64, 64, 3, 1, 1, 1},
      // gppf-mini's narrow legos (4-16 channels) and stem: where oneDNN's kernels fall to 8-40 GFLOP/s.
      {"mini_b16_64x64x32-8_1x1", 16, 64, 64, 32, 8, 1, 1, 0, 1},
      {"mini_b64_28x28x32-8_1x1", 64, 28, 28, 32, 8, 1, 1, 0, 1},
      {"mini_b64_28x28x4-32_1x1", 64, 28, 28, 4, 32, 1, 1, 0, 1},
      {"mini_b64_28x28x16-4_1x1", 64, 28, 28, 16, 4, 1, 1, 0, 1},
      {"mini_b16_32x32x64-16_1x1", 16, 32, 32, 64, 16, 1, 1, 0, 1},
      {"mini_b64_14x14x8-64_1x1", 64, 14, 14, 8, 64, 1, 1, 0, 1},
      {"mini_b64_28x28x4_3x3", 64, 28, 28, 4, 4, 3, 1, 1, 1},
      {"mini_b64_28x28x1-16_3x3", 64, 28, 28, 1, 16, 3, 1, 1, 1},
      {"mini_b16_64x64x32-64_1x1_s2", 16, 64, 64, 32, 64, 1, 2, 0, 1},
      // The heads' read-outs: segmentation classes at 64x64, a detection size/offset map at 32x32.
      {"readout_b16_64x64x32-11_1x1", 16, 64, 64, 32, 11, 1, 1, 0, 1},
      {"readout_b16_32x32x32-2_1x1", 16, 32, 32, 32, 2, 1, 1, 0, 1},
  };
  return v;
}

enum Pass { kFwd, kBwdData, kBwdFilter };

struct Problem {
  k::Conv2dParams p;
  k::Conv2dGeometry g;
  Tensor x, w, b, y;
};

Problem make_problem(const ConvShape& s) {
  Problem pr;
  pr.p.stride_h = pr.p.stride_w = s.stride;
  pr.p.pad_h = pr.p.pad_w = s.pad;
  pr.p.groups = s.groups;
  const Shape xs{s.n, s.h, s.w, s.c}, ws{s.k, s.r, s.r, s.c / s.groups};
  pr.g = k::conv2d_geometry("bench", pr.p, xs, ws);
  pr.x = Tensor::empty(xs, DType::F32);
  pr.x.fill_(0.5f);
  pr.w = Tensor::empty(ws, DType::F32);
  pr.w.fill_(0.01f);
  pr.b = Tensor::zeros({s.k}, DType::F32);
  pr.y = Tensor::empty(pr.g.y_shape(), DType::F32);
  pr.y.fill_(0.25f);
  return pr;
}

void set_rate(benchmark::State& state, const Problem& pr) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(pr.g.flops(), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// Calls our public entry point for one pass (weight reorders and all).
std::function<void()> ours_op(Problem& pr, Pass pass, Tensor& dx, Tensor& dw) {
  return [&pr, pass, &dx, &dw] {
    if (pass == kFwd) k::conv2d_fwd(pr.p, pr.x, pr.w, Tensor(), pr.y);
    if (pass == kBwdData) k::conv2d_bwd_data(pr.p, pr.y, pr.w, dx, k::GradMode::Overwrite);
    if (pass == kBwdFilter) k::conv2d_bwd_filter(pr.p, pr.x, pr.y, dw, nullptr, k::GradMode::Overwrite);
  };
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The GEMM fallback (what a build without oneDNN runs).
void gemm(benchmark::State& state, const ConvShape& s, Pass pass) {
  Problem pr = make_problem(s);
  Tensor dx = Tensor::zeros(pr.x.shape(), DType::F32), dw = Tensor::zeros(pr.w.shape(), DType::F32);
  const float *x = pr.x.data_as<float>(), *w = pr.w.data_as<float>();
  float* y = pr.y.data_as<float>();
  for (auto _ : state) {
    if (pass == kFwd) k::host::gemm_conv2d_fwd(pr.p, pr.g, x, w, nullptr, y);
    if (pass == kBwdData) k::host::gemm_conv2d_bwd_data(pr.p, pr.g, y, w, dx.data_as<float>(), k::GradMode::Overwrite);
    if (pass == kBwdFilter)
      k::host::gemm_conv2d_bwd_filter(pr.p, pr.g, x, y, dw.data_as<float>(), nullptr, k::GradMode::Overwrite);
  }
  set_rate(state, pr);
}

#ifdef GPPF_HAVE_ONEDNN
// oneDNN on its own: the primitive built once, weights in its preferred layout before timing.
struct DirectOneDnn {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::primitive prim;
  std::unordered_map<int, dnnl::memory> args;
  std::vector<float> dx;

  DirectOneDnn(const ConvShape& s, Problem& pr, Pass pass) {
    using dnnl::memory;
    using Tag = memory::format_tag;
    const auto& g = pr.g;
    const memory::desc xmd({g.n, g.c, g.h, g.w}, memory::data_type::f32, Tag::nhwc);
    const memory::desc ymd({g.n, g.k, g.p, g.q}, memory::data_type::f32, Tag::nhwc);
    const memory::dims wdims =
        g.groups == 1 ? memory::dims{g.k, g.c, g.r, g.s} : memory::dims{g.groups, g.kg(), g.cg(), g.r, g.s};
    const memory::desc wany(wdims, memory::data_type::f32, Tag::any);
    const memory::dims st{s.stride, s.stride}, dil{0, 0}, pad{s.pad, s.pad};
    const dnnl::convolution_forward::desc fd(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                             xmd, wany, ymd, st, dil, pad, pad);
    const dnnl::convolution_forward::primitive_desc fpd(fd, eng);
    memory xm(xmd, eng, pr.x.data()), ym(ymd, eng, pr.y.data());
    dx.resize(static_cast<std::size_t>(pr.x.numel()));
    memory dxm(xmd, eng, dx.data());
    // The weights in the primitive's layout, reordered once from the real OHWI weights. (Left
    // uninitialised, fresh pages all map the kernel's one zero page and a 9 MB tensor would sit in L1.)
    const memory::desc wuser(wdims, memory::data_type::f32, g.groups == 1 ? Tag::ohwi : Tag::gohwi);
    memory wum(wuser, eng, pr.w.data());
    auto packed = [&](const memory::desc& md) {
      memory m(md, eng);
      dnnl::reorder(wum, m).execute(strm, wum, m);
      strm.wait();
      return m;
    };
    if (pass == kFwd) {
      prim = dnnl::convolution_forward(fpd);
      args = {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, packed(fpd.weights_desc())}, {DNNL_ARG_DST, ym}};
    } else if (pass == kBwdData) {
      const dnnl::convolution_backward_data::desc bd(dnnl::algorithm::convolution_direct, xmd, wany, ymd, st, dil, pad,
                                                     pad);
      const dnnl::convolution_backward_data::primitive_desc bpd(bd, eng, fpd);
      prim = dnnl::convolution_backward_data(bpd);
      args = {{DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_WEIGHTS, packed(bpd.weights_desc())}, {DNNL_ARG_DIFF_SRC, dxm}};
    } else {
      const dnnl::convolution_backward_weights::desc bd(dnnl::algorithm::convolution_direct, xmd, wany, ymd, st, dil,
                                                        pad, pad);
      const dnnl::convolution_backward_weights::primitive_desc bpd(bd, eng, fpd);
      prim = dnnl::convolution_backward_weights(bpd);
      args = {
          {DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_DIFF_WEIGHTS, memory(bpd.diff_weights_desc(), eng)}};
    }
  }
  void operator()() {
    prim.execute(strm, args);
    strm.wait();
  }
};

// GPPF_BENCH_COLD=1: 128 MB written before every timed call, so that the operands come from memory
// as in a training step (the narrow gppf-mini shapes run 2-5x slower cold than warm).
void evict_caches() {
  static const bool cold = std::getenv("GPPF_BENCH_COLD") != nullptr;
  if (!cold) return;
  static std::vector<float> junk(std::size_t{32} << 20, 1.0f);
  for (float& v : junk) v += 1.0f;
  benchmark::DoNotOptimize(junk.data());
}

// Ours and direct oneDNN alternately in one loop, so that both see the same machine load (the dev
// VM is shared); the rates come from the median time of each.
void versus(benchmark::State& state, const ConvShape& s, Pass pass) {
  Problem pr = make_problem(s);
  Tensor dx = Tensor::zeros(pr.x.shape(), DType::F32), dw = Tensor::zeros(pr.w.shape(), DType::F32);
  DirectOneDnn direct(s, pr, pass);
  auto mine = ours_op(pr, pass, dx, dw);
  mine();  // build and cache the plan outside the timing
  direct();
  std::vector<double> t_ours, t_dnnl;
  using Clock = std::chrono::steady_clock;
  for (auto _ : state) {
    evict_caches();
    const auto t0 = Clock::now();
    direct();
    const auto t1 = Clock::now();
    evict_caches();
    const auto t2 = Clock::now();
    mine();
    const auto t3 = Clock::now();
    t_dnnl.push_back(std::chrono::duration<double>(t1 - t0).count());
    t_ours.push_back(std::chrono::duration<double>(t3 - t2).count());
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0 + t3 - t2).count());
  }
  const double ours_rate = pr.g.flops() / median(t_ours) * 1e-9, dnnl_rate = pr.g.flops() / median(t_dnnl) * 1e-9;
  state.counters["ours_GFLOP/s"] = ours_rate;
  state.counters["onednn_GFLOP/s"] = dnnl_rate;
  state.counters["ratio"] = ours_rate / dnnl_rate;
}
#else
// Without oneDNN there is nothing to compare with: ours is the GEMM fallback.
void versus(benchmark::State& state, const ConvShape& s, Pass pass) {
  Problem pr = make_problem(s);
  Tensor dx = Tensor::zeros(pr.x.shape(), DType::F32), dw = Tensor::zeros(pr.w.shape(), DType::F32);
  auto mine = ours_op(pr, pass, dx, dw);
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    mine();
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  set_rate(state, pr);
}
#endif

const char* pass_name(Pass p) { return p == kFwd ? "fwd" : p == kBwdData ? "bwd_data" : "bwd_filter"; }

const int kRegistered = [] {
  for (const ConvShape& s : shapes())
    for (Pass pass : {kFwd, kBwdData, kBwdFilter}) {
      const std::string suffix = std::string(pass_name(pass)) + "/" + s.name;
      benchmark::RegisterBenchmark(("BM_Conv_" + suffix).c_str(), versus, s, pass)
          ->Unit(benchmark::kMillisecond)
          ->UseManualTime()
          ->MinTime(0.5);
      benchmark::RegisterBenchmark(("BM_Gemm_" + suffix).c_str(), gemm, s, pass)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(0.2);
    }
  return 0;
}();

}  // namespace
