// The machine's SGEMM rate through OpenBLAS: the yardstick for every host compute target
// (issue 3: conv within 85% of oneDNN; issue 5: the training step at 60% of SGEMM).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <vector>

namespace {

void BM_Sgemm(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0)), n = static_cast<int>(state.range(1)),
            k = static_cast<int>(state.range(2));
  std::vector<float> a(static_cast<std::size_t>(m) * k, 0.5f), b(static_cast<std::size_t>(k) * n, 0.25f),
      c(static_cast<std::size_t>(m) * n);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Sgemm)
    ->Args({1024, 1024, 1024})
    ->Args({3136, 64, 576})
    ->Args({784, 128, 1152})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
