// Host element-wise ops against memcpy bandwidth, and linear layers against raw cblas_sgemm on the
// same shapes (the overhead of our checks, bias and dispatch).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstring>
#include <vector>

#include "kernels/concat.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/linear.hpp"
#include "kernels/resample.hpp"

namespace {

using gppf::DType;
using gppf::Tensor;
namespace k = gppf::kernels;

Tensor filled(const gppf::Shape& shape, float v) {
  Tensor t = Tensor::empty(shape, DType::F32);
  t.fill_(v);
  return t;
}

// Bytes moved per element: memcpy and relu read 1 and write 1; add and axpby read 2 and write 1.
void set_bytes(benchmark::State& state, std::int64_t n, int streams) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * n * streams * 4);
}

void BM_Memcpy(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const Tensor x = filled({n}, 1.0f);
  Tensor y = filled({n}, 0.0f);
  for (auto _ : state) {
    std::memcpy(y.data(), x.data(), static_cast<std::size_t>(n) * 4);
    benchmark::ClobberMemory();
  }
  set_bytes(state, n, 2);
}

void BM_Relu(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const Tensor x = filled({n}, -1.0f);
  Tensor y = filled({n}, 0.0f);
  for (auto _ : state) {
    k::relu_fwd(x, y);
    benchmark::ClobberMemory();
  }
  set_bytes(state, n, 2);
}

void BM_ReluBwd(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const Tensor y = filled({n}, 1.0f), dy = filled({n}, 0.5f);
  Tensor dx = filled({n}, 0.0f);
  for (auto _ : state) {
    k::relu_bwd(y, dy, dx, k::GradMode::Overwrite);
    benchmark::ClobberMemory();
  }
  set_bytes(state, n, 3);
}

void BM_Add(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const Tensor a = filled({n}, 1.0f), b = filled({n}, 2.0f);
  Tensor y = filled({n}, 0.0f);
  for (auto _ : state) {
    k::add(a, b, y);
    benchmark::ClobberMemory();
  }
  set_bytes(state, n, 3);
}

void BM_Axpby(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const Tensor x = filled({n}, 1.0f);
  Tensor y = filled({n}, 0.0f);
  for (auto _ : state) {
    k::axpby(0.5f, x, 0.5f, y);
    benchmark::ClobberMemory();
  }
  set_bytes(state, n, 3);
}

void BM_Dot(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const Tensor a = filled({n}, 1.0f), b = filled({n}, 0.5f);
  Tensor out = filled({1}, 0.0f);
  for (auto _ : state) {
    k::dot(a, b, out, k::GradMode::Overwrite);
    benchmark::ClobberMemory();
  }
  set_bytes(state, n, 2);
}

// 2^16 floats (256 KiB per operand) stays in L2; 2^23 (32 MiB) streams from memory.
#define GPPF_STREAM_SIZES ->Arg(1 << 16)->Arg(1 << 23)->UseRealTime()
BENCHMARK(BM_Memcpy) GPPF_STREAM_SIZES;
BENCHMARK(BM_Relu) GPPF_STREAM_SIZES;
BENCHMARK(BM_ReluBwd) GPPF_STREAM_SIZES;
BENCHMARK(BM_Add) GPPF_STREAM_SIZES;
BENCHMARK(BM_Axpby) GPPF_STREAM_SIZES;
BENCHMARK(BM_Dot) GPPF_STREAM_SIZES;

void set_flops(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// Args: N, In, Out.
void BM_LinearFwd(benchmark::State& state) {
  const std::int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  const Tensor x = filled({n, in}, 0.5f), w = filled({out, in}, 0.25f), bias = filled({out}, 1.0f);
  Tensor y = filled({n, out}, 0.0f);
  for (auto _ : state) {
    k::linear_fwd(x, w, bias, y);
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * n * in * out);
}

void BM_LinearBwdData(benchmark::State& state) {
  const std::int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  const Tensor dy = filled({n, out}, 0.5f), w = filled({out, in}, 0.25f);
  Tensor dx = filled({n, in}, 0.0f);
  for (auto _ : state) {
    k::linear_bwd_data(dy, w, dx, k::GradMode::Overwrite);
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * n * in * out);
}

void BM_LinearBwdWeight(benchmark::State& state) {
  const std::int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  const Tensor x = filled({n, in}, 0.5f), dy = filled({n, out}, 0.25f);
  Tensor dw = filled({out, in}, 0.0f), db = filled({out}, 0.0f);
  for (auto _ : state) {
    k::linear_bwd_weight(x, dy, dw, &db, k::GradMode::Accumulate);
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * n * in * out);
}

// The forward's GEMM alone: y = x w^T, straight into OpenBLAS.
void BM_CblasSgemmNT(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0)), in = static_cast<int>(state.range(1)),
            out = static_cast<int>(state.range(2));
  std::vector<float> x(static_cast<std::size_t>(n) * in, 0.5f), w(static_cast<std::size_t>(out) * in, 0.25f),
      y(static_cast<std::size_t>(n) * out);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x.data(), in, w.data(), in, 0.0f, y.data(),
                out);
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * n * in * out);
}

#define GPPF_LINEAR_SHAPES            \
  ->Args({256, 2048, 1000})           \
      ->Args({64, 512, 10})           \
      ->Args({1024, 1024, 1024})      \
      ->Args({3136, 64, 256})         \
      ->Unit(benchmark::kMillisecond) \
      ->UseRealTime()
BENCHMARK(BM_CblasSgemmNT) GPPF_LINEAR_SHAPES;
BENCHMARK(BM_LinearFwd) GPPF_LINEAR_SHAPES;
BENCHMARK(BM_LinearBwdData) GPPF_LINEAR_SHAPES;
BENCHMARK(BM_LinearBwdWeight) GPPF_LINEAR_SHAPES;

// A decoder's 2x upsampling of a [8, 28, 28, 128] feature map, and a 3-way channel concat.
void BM_Upsample(benchmark::State& state) {
  const k::UpsampleParams p{state.range(0) ? k::UpsampleMode::Bilinear : k::UpsampleMode::Nearest};
  const bool backward = state.range(1) != 0;
  Tensor x = filled({8, 28, 28, 128}, 1.0f), y = filled({8, 56, 56, 128}, 0.5f);
  for (auto _ : state) {
    if (backward)
      k::upsample_bwd(p, y, x, k::GradMode::Overwrite);
    else
      k::upsample_fwd(p, x, y);
    benchmark::ClobberMemory();
  }
  set_bytes(state, x.numel() + y.numel(), 1);
}
BENCHMARK(BM_Upsample)->ArgsProduct({{0, 1}, {0, 1}})->ArgNames({"bilinear", "bwd"})->UseRealTime();

void BM_Concat(benchmark::State& state) {
  const std::vector<Tensor> xs = {filled({8, 56, 56, 64}, 1.0f), filled({8, 56, 56, 32}, 2.0f),
                                  filled({8, 56, 56, 32}, 3.0f)};
  Tensor y = filled({8, 56, 56, 128}, 0.0f);
  for (auto _ : state) {
    k::concat_channels(xs, y);
    benchmark::ClobberMemory();
  }
  set_bytes(state, y.numel(), 2);
}
BENCHMARK(BM_Concat)->UseRealTime();

}  // namespace
