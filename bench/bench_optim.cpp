// Optimizer update throughput on the host for a 25.6M-parameter model (ResNet-50's tensor list),
// against memory bandwidth measured in the same program. GB/s counts the bytes each step must move:
// the gradient-norm pass plus the fused update (docs/OPTIMIZATION.md, "Memory traffic").
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstring>
#include <memory>
#include <vector>

#include "src/optim/optimizer.hpp"

namespace {

using namespace gppf;

// ResNet-50: stem, 16 bottlenecks (conv1x1, conv3x3, conv1x1, projection in each stage's first),
// BN scale/shift after every conv, the 1000-way classifier. 25.6M parameters, 161 tensors.
std::vector<Shape> resnet50_shapes() {
  std::vector<Shape> s;
  auto conv_bn = [&](std::int64_t k, std::int64_t r, std::int64_t c) {
    s.push_back({k, r, r, c});
    s.push_back({k});
    s.push_back({k});
  };
  conv_bn(64, 7, 3);
  std::int64_t in = 64;
  const int blocks[4] = {3, 4, 6, 3};
  for (int stage = 0; stage < 4; ++stage) {
    const std::int64_t w = 64 << stage;
    for (int b = 0; b < blocks[stage]; ++b) {
      conv_bn(w, 1, in);
      conv_bn(w, 3, w);
      conv_bn(4 * w, 1, w);
      if (b == 0) conv_bn(4 * w, 1, in);
      in = 4 * w;
    }
  }
  s.push_back({1000, 2048});
  s.push_back({1000});
  return s;
}

struct Model {
  std::vector<nn::Parameter> params;
  std::int64_t numel = 0;
  std::vector<nn::Parameter*> ptrs() {
    std::vector<nn::Parameter*> out;
    for (auto& p : params) out.push_back(&p);
    return out;
  }
};

Model& model() {
  static Model m = [] {
    Model out;
    for (const Shape& shape : resnet50_shapes()) {
      nn::Parameter p;
      p.name = str("t", out.params.size());
      p.value = Tensor::zeros(shape, DType::F32);
      p.value.fill_(0.01f);
      p.grad = Tensor::zeros(shape, DType::F32);
      p.grad.fill_(0.001f);
      p.decay = shape.size() > 1;
      out.numel += p.value.numel();
      out.params.push_back(std::move(p));
    }
    return out;
  }();
  return m;
}

// Bytes per parameter element each step moves (f32): norm pass + update pass(es).
double bytes_per_element(const std::string& type) {
  if (type == "sgd") return 4.0 * (1 + 5);    // read g | read p g m, write p m
  if (type == "adamw") return 4.0 * (1 + 7);  // read g | read p g m v, write p m v
  if (type == "lars") return 4.0 * (2 + 5);   // read g p | read p g m, write p m
  return 4.0 * (1 + 6 + 4);                   // lamb: read g | read p g m v, write m v | read p m v, write p
}

void BM_OptimizerStep(benchmark::State& state, const std::string& type) {
  Model& m = model();
  optim::OptimizerConfig c;
  c.type = type;
  c.max_grad_norm = type == "sgd" ? 0.0f : 1.0f;
  auto opt = optim::Optimizer::create(c, m.ptrs());
  for (auto _ : state) {
    for (auto& p : m.params) p.touched = true;
    benchmark::DoNotOptimize(opt->step(1e-6f));
  }
  const double bytes = bytes_per_element(type) * static_cast<double>(m.numel);
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["Mparam"] = static_cast<double>(m.numel) / 1e6;
  state.counters["threads"] = omp_get_max_threads();
}
BENCHMARK_CAPTURE(BM_OptimizerStep, sgd, std::string("sgd"))->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_OptimizerStep, adamw, std::string("adamw"))->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_OptimizerStep, lars, std::string("lars"))->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_OptimizerStep, lamb, std::string("lamb"))->Unit(benchmark::kMillisecond)->UseRealTime();

// The yardstick: copying the same number of f32 values (4 * numel bytes read and written), with one
// memcpy per OpenMP thread and with a single memcpy.
void BM_Memcpy(benchmark::State& state) {
  const bool parallel = state.range(0) != 0;
  const std::size_t bytes = 4 * static_cast<std::size_t>(model().numel);
  std::unique_ptr<char[]> src(new char[bytes]), dst(new char[bytes]);
  std::memset(src.get(), 1, bytes);
  std::memset(dst.get(), 0, bytes);
  for (auto _ : state) {
    if (parallel) {
#pragma omp parallel
      {
        const std::size_t n = static_cast<std::size_t>(omp_get_num_threads());
        const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
        const std::size_t lo = bytes * t / n, hi = bytes * (t + 1) / n;
        std::memcpy(dst.get() + lo, src.get() + lo, hi - lo);
      }
    } else {
      std::memcpy(dst.get(), src.get(), bytes);
    }
    benchmark::DoNotOptimize(dst.get());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] =
      benchmark::Counter(2.0 * static_cast<double>(bytes), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Memcpy)->ArgName("omp")->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
