// Host batch norm and pooling bandwidth on ResNet-like NHWC shapes, against a memcpy of the same
// tensor (OpenMP threads over chunks, as the kernels use) run in the same program. "GB/s" counts the
// bytes each kernel's passes move: BN train forward 3 tensors (stats read, apply read + write),
// backward 5 (+2 with relu: y is read in both passes), pooling x + y (+ dx), memcpy 2.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstring>
#include <vector>

#include "kernels/batchnorm.hpp"
#include "kernels/pool.hpp"

#ifdef GPPF_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

using gppf::DType;
using gppf::Shape;
using gppf::Tensor;
namespace k = gppf::kernels;

// ResNet-50 stages, then gppf-mini's narrow lego activations (4 and 32 channels).
const std::vector<Shape> kShapes = {
    {32, 56, 56, 64}, {32, 28, 28, 128}, {32, 14, 14, 256}, {64, 28, 28, 4}, {64, 28, 28, 32}};

Shape shape_of(const benchmark::State& state) { return kShapes[static_cast<std::size_t>(state.range(0))]; }

Tensor filled(const Shape& s, float lo, float step) {
  Tensor t = Tensor::empty(s, DType::F32);
  float* p = t.data_as<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = lo + step * static_cast<float>(i % 97);
  return t;
}

void set_bytes(benchmark::State& state, double tensors, std::int64_t numel) {
  state.counters["GB/s"] =
      benchmark::Counter(tensors * static_cast<double>(numel) * sizeof(float),
                         benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_Memcpy(benchmark::State& state) {
  const Shape s = shape_of(state);
  Tensor a = filled(s, 0.0f, 1.0f), b = Tensor::empty(s, DType::F32);
  const std::int64_t n = a.numel();
  const float* src = a.data_as<float>();
  float* dst = b.data_as<float>();
  for (auto _ : state) {
#pragma omp parallel
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const std::int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
      std::memcpy(dst + lo, src + lo, static_cast<std::size_t>(hi - lo) * sizeof(float));
    }
    benchmark::DoNotOptimize(dst);
  }
  set_bytes(state, 2, n);
}
BENCHMARK(BM_Memcpy)->DenseRange(0, 4)->Unit(benchmark::kMillisecond)->UseRealTime();

struct BnState {
  Tensor x, y, dy, dx, gamma, beta, rm, rv, sm, si, dg, db;
  explicit BnState(const Shape& s) {
    const std::int64_t c = s.back();
    x = filled(s, -1.0f, 0.02f);
    dy = filled(s, -0.5f, 0.01f);
    y = Tensor::empty(s, DType::F32);
    dx = Tensor::empty(s, DType::F32);
    gamma = filled({c}, 0.5f, 0.01f);
    beta = filled({c}, -0.1f, 0.002f);
    rm = Tensor::zeros({c}, DType::F32);
    rv = filled({c}, 1.0f, 0.0f);
    sm = Tensor::empty({c}, DType::F32);
    si = Tensor::empty({c}, DType::F32);
    dg = Tensor::empty({c}, DType::F32);
    db = Tensor::empty({c}, DType::F32);
  }
};

void BM_BatchNormFwdTrain(benchmark::State& state) {
  BnState b(shape_of(state));
  k::BatchNormParams p;
  p.relu = state.range(1) != 0;
  for (auto _ : state) k::batchnorm_fwd_train(p, b.x, b.gamma, b.beta, b.rm, b.rv, b.y, b.sm, b.si);
  set_bytes(state, 3, b.x.numel());
}

void BM_BatchNormBwd(benchmark::State& state) {
  BnState b(shape_of(state));
  k::BatchNormParams p;
  p.relu = state.range(1) != 0;
  k::batchnorm_fwd_train(p, b.x, b.gamma, b.beta, b.rm, b.rv, b.y, b.sm, b.si);
  for (auto _ : state)
    k::batchnorm_bwd(p, b.x, b.y, b.dy, b.gamma, b.sm, b.si, b.dx, b.dg, b.db, k::GradMode::Accumulate);
  set_bytes(state, p.relu ? 7 : 5, b.x.numel());
}

void BM_BatchNormFwdInfer(benchmark::State& state) {
  BnState b(shape_of(state));
  k::BatchNormParams p;
  p.relu = state.range(1) != 0;
  for (auto _ : state) k::batchnorm_fwd_infer(p, b.x, b.gamma, b.beta, b.rm, b.rv, b.y);
  set_bytes(state, 2, b.x.numel());
}

BENCHMARK(BM_BatchNormFwdTrain)->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_BatchNormBwd)->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_BatchNormFwdInfer)->ArgsProduct({{0, 1}, {1}})->Unit(benchmark::kMillisecond)->UseRealTime();

k::Pool2dParams pool_params(int which) {
  k::Pool2dParams p;  // 0: 2x2 stride 2; 1: ResNet's stem pooling, 3x3 stride 2 pad 1
  if (which == 1) {
    p.kernel_h = p.kernel_w = 3;
    p.pad_h = p.pad_w = 1;
  }
  return p;
}

// range(0): shape, range(1): params, range(2): 0 max / 1 avg, range(3): 0 fwd / 1 bwd.
void BM_Pool(benchmark::State& state) {
  const Shape xs = shape_of(state);
  const k::Pool2dParams p = pool_params(static_cast<int>(state.range(1)));
  const bool avg = state.range(2) != 0, bwd = state.range(3) != 0;
  const Shape ys = k::pool2d_output_shape(p, xs);
  Tensor x = filled(xs, -1.0f, 0.02f), y = Tensor::empty(ys, DType::F32), dy = filled(ys, -0.5f, 0.01f),
         dx = Tensor::empty(xs, DType::F32);
  if (avg)
    k::avgpool2d_fwd(p, x, y);
  else
    k::maxpool2d_fwd(p, x, y);
  for (auto _ : state) {
    if (!bwd && avg) k::avgpool2d_fwd(p, x, y);
    if (!bwd && !avg) k::maxpool2d_fwd(p, x, y);
    if (bwd && avg) k::avgpool2d_bwd(p, dy, dx);
    if (bwd && !avg) k::maxpool2d_bwd(p, x, y, dy, dx);
  }
  const double ratio = static_cast<double>(gppf::shape_numel(ys)) / static_cast<double>(x.numel());
  // fwd: read x, write y; bwd: (max: read x) read dy, write dx.
  set_bytes(state, bwd ? (avg ? 1.0 : 2.0) + ratio : 1.0 + ratio, x.numel());
}
BENCHMARK(BM_Pool)->ArgsProduct({{0, 1}, {0, 1}, {0, 1}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_GlobalAvgPool(benchmark::State& state) {
  const Shape xs{32, 7, 7, 2048};
  const bool bwd = state.range(0) != 0;
  Tensor x = filled(xs, -1.0f, 0.02f), y = Tensor::empty({32, 2048}, DType::F32);
  for (auto _ : state) {
    if (bwd)
      k::global_avgpool_bwd(y, x, k::GradMode::Overwrite);
    else
      k::global_avgpool_fwd(x, y);
  }
  set_bytes(state, 1, x.numel());
}
BENCHMARK(BM_GlobalAvgPool)->DenseRange(0, 1)->Unit(benchmark::kMillisecond)->UseRealTime();

#ifdef GPPF_HAVE_ONEDNN
// oneDNN's NHWC batch norm (training forward + backward, fused ReLU when range(1)), as a yardstick
// for our OpenMP loops; GB/s counts the same 3 + 7 (relu) or 3 + 5 tensors as ours.
void BM_OnednnBatchNormFwdBwd(benchmark::State& state) {
  using namespace dnnl;
  const Shape s = shape_of(state);
  const bool relu = state.range(1) != 0;
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  const memory::dims dims = {s[0], s[3], s[1], s[2]};
  const memory::desc md(dims, memory::data_type::f32, memory::format_tag::nhwc);
  const memory::desc cmd({s[3]}, memory::data_type::f32, memory::format_tag::a);
  auto flags = normalization_flags::use_scale | normalization_flags::use_shift;
  if (relu) flags = flags | normalization_flags::fuse_norm_relu;
  const batch_normalization_forward::primitive_desc fpd({prop_kind::forward_training, md, 1e-5f, flags}, eng);
  const batch_normalization_backward::primitive_desc bpd({prop_kind::backward, md, md, 1e-5f, flags}, eng, fpd);
  BnState b(s);
  memory src(md, eng, b.x.data()), dst(md, eng, b.y.data()), ddst(md, eng, b.dy.data()), dsrc(md, eng, b.dx.data());
  memory mean(cmd, eng, b.sm.data()), var(cmd, eng, b.si.data()), scale(cmd, eng, b.gamma.data()),
      shift(cmd, eng, b.beta.data()), dscale(cmd, eng, b.dg.data()), dshift(cmd, eng, b.db.data());
  memory ws(fpd.workspace_desc(), eng);
  batch_normalization_forward fwd(fpd);
  batch_normalization_backward bwd(bpd);
  for (auto _ : state) {
    fwd.execute(strm, {{DNNL_ARG_SRC, src},
                       {DNNL_ARG_DST, dst},
                       {DNNL_ARG_MEAN, mean},
                       {DNNL_ARG_VARIANCE, var},
                       {DNNL_ARG_SCALE, scale},
                       {DNNL_ARG_SHIFT, shift},
                       {DNNL_ARG_WORKSPACE, ws}});
    bwd.execute(strm, {{DNNL_ARG_SRC, src},
                       {DNNL_ARG_MEAN, mean},
                       {DNNL_ARG_VARIANCE, var},
                       {DNNL_ARG_DIFF_DST, ddst},
                       {DNNL_ARG_SCALE, scale},
                       {DNNL_ARG_SHIFT, shift},
                       {DNNL_ARG_WORKSPACE, ws},
                       {DNNL_ARG_DIFF_SRC, dsrc},
                       {DNNL_ARG_DIFF_SCALE, dscale},
                       {DNNL_ARG_DIFF_SHIFT, dshift}});
    strm.wait();
  }
  set_bytes(state, relu ? 10 : 8, b.x.numel());
}
BENCHMARK(BM_OnednnBatchNormFwdBwd)->ArgsProduct({{0, 1, 2}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
#endif

// Ours, forward + backward in one timing, counted like the oneDNN yardstick above.
void BM_BatchNormFwdBwd(benchmark::State& state) {
  BnState b(shape_of(state));
  k::BatchNormParams p;
  p.relu = state.range(1) != 0;
  for (auto _ : state) {
    k::batchnorm_fwd_train(p, b.x, b.gamma, b.beta, b.rm, b.rv, b.y, b.sm, b.si);
    k::batchnorm_bwd(p, b.x, b.y, b.dy, b.gamma, b.sm, b.si, b.dx, b.dg, b.db, k::GradMode::Overwrite);
  }
  set_bytes(state, p.relu ? 10 : 8, b.x.numel());
}
BENCHMARK(BM_BatchNormFwdBwd)->ArgsProduct({{0, 1, 2}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
