// Host 1x1 convolutions with at most 16 outputs from 32 or 64 inputs: the heads' read-outs
// (detection size/offset with 2 outputs, segmentation classes). oneDNN blocks output channels by 16
// and ran their gradients at 4-34 GFLOP/s in the training step (docs/PERFORMANCE.md), about a
// quarter of the rate at which the data can be streamed. Here the rows of C floats (a compile-time C)
// live in vector registers; the filter-gradient sums are f32 over blocks of pixels and f64 across
// blocks and threads (threads added in order: deterministic for a thread count). From 16 inputs
// oneDNN's filter gradient was as fast or faster (bench_conv, GPPF_BENCH_COLD=1).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/conv.hpp"

namespace gppf::kernels::host {
namespace {

constexpr std::int64_t kPixelBlock = 64;
constexpr std::int64_t kMaxOutputs = 16;

// Four pixels at a time: four independent accumulator chains keep the FMA units busy (one chain
// waits on the FMA latency for every output, which made the first version slower than oneDNN).
constexpr std::int64_t kLanes = 4;

template <std::int64_t C>
void bwd_data(const Conv2dGeometry& g, const float* dy, const float* w, float* dx, GradMode mode) {
  const std::int64_t pixels = g.n * g.h * g.w, K = g.k, groups = (pixels + kLanes - 1) / kLanes;
  const bool acc = mode == GradMode::Accumulate;
#pragma omp parallel for schedule(static)
  for (std::int64_t b = 0; b < groups; ++b) {
    const std::int64_t p0 = b * kLanes, lanes = std::min(kLanes, pixels - p0);
    float v[kLanes][C];
    for (std::int64_t l = 0; l < kLanes; ++l)
      for (std::int64_t c = 0; c < C; ++c) v[l][c] = acc && l < lanes ? dx[(p0 + l) * C + c] : 0.0f;
    for (std::int64_t o = 0; o < K; ++o) {
      const float* wr = w + o * C;
      for (std::int64_t l = 0; l < kLanes; ++l) {
        const float d = l < lanes ? dy[(p0 + l) * K + o] : 0.0f;
        for (std::int64_t c = 0; c < C; ++c) v[l][c] += d * wr[c];
      }
    }
    for (std::int64_t l = 0; l < lanes; ++l)
      for (std::int64_t c = 0; c < C; ++c) dx[(p0 + l) * C + c] = v[l][c];
  }
}

template <std::int64_t C>
void bwd_filter(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* dbias, GradMode mode) {
  const std::int64_t pixels = g.n * g.h * g.w, K = g.k, nw = K * C;
  const bool acc = mode == GradMode::Accumulate;
  if (dbias) bias_grad(dy, pixels, K, dbias, acc);
  const int nt = omp_get_max_threads();
  std::vector<double> parts(static_cast<std::size_t>(nt * nw), 0.0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), nthr = omp_get_num_threads();
    double* part = parts.data() + t * nw;
    const std::int64_t p0 = pixels * t / nthr, p1 = pixels * (t + 1) / nthr;
    for (std::int64_t start = p0; start < p1; start += kPixelBlock) {
      const std::int64_t end = std::min(start + kPixelBlock, p1);
      // One output at a time over the block (its x rows stay in L1), in kLanes chains.
      for (std::int64_t o = 0; o < K; ++o) {
        float r[kLanes][C] = {};
        std::int64_t p = start;
        for (; p + kLanes <= end; p += kLanes)
          for (std::int64_t l = 0; l < kLanes; ++l) {
            const float d = dy[(p + l) * K + o];
            for (std::int64_t c = 0; c < C; ++c) r[l][c] += d * x[(p + l) * C + c];
          }
        for (; p < end; ++p) {
          const float d = dy[p * K + o];
          for (std::int64_t c = 0; c < C; ++c) r[0][c] += d * x[p * C + c];
        }
        double* row = part + o * C;
        for (std::int64_t c = 0; c < C; ++c) row[c] += (r[0][c] + r[1][c]) + (r[2][c] + r[3][c]);
      }
    }
  }
  for (std::int64_t j = 0; j < nw; ++j) {
    double v = 0;
    for (int t = 0; t < nt; ++t) v += parts[static_cast<std::size_t>(t * nw + j)];
    dw[j] = static_cast<float>(acc ? dw[j] + v : v);
  }
}

}  // namespace

bool pointwise_few_outputs(const Conv2dParams& p, const Conv2dGeometry& g) {
  return g.r == 1 && g.s == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0 && g.groups == 1 &&
         g.k <= kMaxOutputs && (g.c == 32 || g.c == 64);
}

void pointwise_few_outputs_bwd_data(const Conv2dGeometry& g, const float* dy, const float* w, float* dx,
                                    GradMode mode) {
  if (g.c == 32) return bwd_data<32>(g, dy, w, dx, mode);
  bwd_data<64>(g, dy, w, dx, mode);
}

void pointwise_few_outputs_bwd_filter(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* dbias,
                                      GradMode mode) {
  if (g.c == 32) return bwd_filter<32>(g, x, dy, dw, dbias, mode);
  bwd_filter<64>(g, x, dy, dw, dbias, mode);
}

}  // namespace gppf::kernels::host
