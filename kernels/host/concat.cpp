#include "kernels/concat.hpp"

#include <algorithm>

#include "kernels/parallel_for.hpp"

namespace gppf::kernels::host {
namespace {
std::int64_t rows_of(const Tensor& y) { return y.dim(-1) == 0 ? 0 : y.numel() / y.dim(-1); }
}  // namespace

// Row by row: each part's slice of a row is one contiguous copy.
void concat_channels(const std::vector<Tensor>& xs, Tensor& y) {
  const std::int64_t rows = rows_of(y), cols = y.dim(-1);
  float* py = y.data_as<float>();
  std::vector<const float*> src(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) src[i] = xs[i].data_as<float>();
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelThreshold)
  for (std::int64_t r = 0; r < rows; ++r) {
    float* dst = py + r * cols;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const std::int64_t c = xs[i].dim(-1);
      std::copy(src[i] + r * c, src[i] + (r + 1) * c, dst);
      dst += c;
    }
  }
}

void split_channels(const Tensor& y, std::vector<Tensor>& xs, bool accumulate) {
  const std::int64_t rows = rows_of(y), cols = y.dim(-1);
  const float* py = y.data_as<float>();
  std::vector<float*> dst(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) dst[i] = xs[i].data_as<float>();
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelThreshold)
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* src = py + r * cols;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const std::int64_t c = xs[i].dim(-1);
      float* out = dst[i] + r * c;
      if (accumulate)
        for (std::int64_t k = 0; k < c; ++k) out[k] += src[k];
      else
        std::copy(src, src + c, out);
      src += c;
    }
  }
}

}  // namespace gppf::kernels::host
