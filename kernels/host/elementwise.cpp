#include "kernels/elementwise.hpp"

#include <algorithm>
#include <vector>

#include "kernels/functors/elementwise.hpp"

namespace gppf::kernels::host {

void relu_fwd(const Tensor& x, Tensor& y) {
  parallel_for_host(x.numel(), ReluFwdFunctor<float>{x.data_as<float>(), y.data_as<float>()});
}

void relu_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate) {
  const float *py = y.data_as<float>(), *pdy = dy.data_as<float>();
  float* pdx = dx.data_as<float>();
  if (accumulate)
    parallel_for_host(y.numel(), ReluBwdFunctor<float, true>{py, pdy, pdx});
  else
    parallel_for_host(y.numel(), ReluBwdFunctor<float, false>{py, pdy, pdx});
}

void add(const Tensor& a, const Tensor& b, Tensor& y, bool relu) {
  const float *pa = a.data_as<float>(), *pb = b.data_as<float>();
  float* py = y.data_as<float>();
  if (relu)
    parallel_for_host(a.numel(), AddFunctor<float, true>{pa, pb, py});
  else
    parallel_for_host(a.numel(), AddFunctor<float, false>{pa, pb, py});
}

void axpby(float alpha, const Tensor& x, float beta, Tensor& y) {
  const float* px = x.data_as<float>();
  float* py = y.data_as<float>();
  if (beta == 0.0f)
    parallel_for_host(x.numel(), AxpbyFunctor<float, float, AlphaValue, false>{{alpha}, px, beta, py});
  else
    parallel_for_host(x.numel(), AxpbyFunctor<float, float, AlphaValue, true>{{alpha}, px, beta, py});
}

void fill(Tensor& y, float value) { parallel_for_host(y.numel(), FillFunctor<float>{y.data_as<float>(), value}); }

void dot(const Tensor& a, const Tensor& b, Tensor& out, bool accumulate) {
  const float *pa = a.data_as<float>(), *pb = b.data_as<float>();
  const std::int64_t n = a.numel();
  const std::int64_t chunks = (n + kDotChunk - 1) / kDotChunk;
  std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (std::int64_t c = 0; c < chunks; ++c) {
    const std::int64_t lo = c * kDotChunk, hi = std::min(n, lo + kDotChunk);
    // Four independent accumulators (a fixed order) so that the adds pipeline.
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    std::int64_t i = lo;
    for (; i + 4 <= hi; i += 4)
      for (int k = 0; k < 4; ++k) s[k] += static_cast<double>(pa[i + k]) * pb[i + k];
    for (; i < hi; ++i) s[0] += static_cast<double>(pa[i]) * pb[i];
    partial[static_cast<std::size_t>(c)] = (s[0] + s[1]) + (s[2] + s[3]);
  }
  double total = 0.0;
  for (const double p : partial) total += p;
  float* o = out.data_as<float>();
  o[0] = static_cast<float>(accumulate ? o[0] + total : total);
}

void reduce_rows(const Tensor& x, Tensor& y, bool accumulate) {
  const std::int64_t cols = x.dim(-1);
  const std::int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  const float* px = x.data_as<float>();
  float* py = y.data_as<float>();
  // Row blocks of a size that depends only on the shape: ~kDotChunk elements each.
  const std::int64_t block = std::max<std::int64_t>(1, kDotChunk / std::max<std::int64_t>(cols, 1));
  const std::int64_t blocks = (rows + block - 1) / block;
  std::vector<double> partial(static_cast<std::size_t>(blocks * cols), 0.0);
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (std::int64_t b = 0; b < blocks; ++b) {
    double* acc = partial.data() + b * cols;
    const std::int64_t hi = std::min(rows, (b + 1) * block);
    for (std::int64_t r = b * block; r < hi; ++r) {
      const float* row = px + r * cols;
      for (std::int64_t c = 0; c < cols; ++c) acc[c] += row[c];
    }
  }
  for (std::int64_t c = 0; c < cols; ++c) {
    double total = 0.0;
    for (std::int64_t b = 0; b < blocks; ++b) total += partial[static_cast<std::size_t>(b * cols + c)];
    py[c] = static_cast<float>(accumulate ? py[c] + total : total);
  }
}

void broadcast_rows(const Tensor& v, Tensor& y) {
  // Row copies on one thread: memory-bound, and it runs right before an OpenBLAS call whose threads
  // would otherwise compete with OpenMP workers still spinning after a parallel region.
  const std::int64_t cols = v.numel();
  const float* pv = v.data_as<float>();
  float* py = y.data_as<float>();
  for (std::int64_t r = 0; cols > 0 && r < y.numel() / cols; ++r) std::copy(pv, pv + cols, py + r * cols);
}

}  // namespace gppf::kernels::host
