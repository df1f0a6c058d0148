// Host convolutions: oneDNN when the build has it (kernels/host/onednn_conv.cpp), otherwise
// im2col/col2im + OpenBLAS SGEMM, NHWC throughout. In NHWC an im2col row is one output pixel's
// receptive field, R*S runs of Cg contiguous channels, so the GEMMs read the weights [Kg, R*S*Cg]
// as stored (OHWI) and write y rows in place (ldc = K). A 1x1, stride-1, unpadded convolution needs
// no im2col at all: x itself is the column matrix.
#include "kernels/conv.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace gppf::kernels::host {
namespace {

// im2col buffers are capped near this many floats (4 MiB): whole images at a time, at least one.
constexpr std::int64_t kColBudget = std::int64_t{1} << 20;

bool is_pointwise(const Conv2dParams& p, const Conv2dGeometry& g) {
  return g.r == 1 && g.s == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}

int to_int(std::int64_t v) { return static_cast<int>(v); }

struct Chunking {
  std::int64_t images;  // per chunk
  std::int64_t cols;    // R*S*Cg: the length of one im2col row
};

Chunking chunking(const Conv2dGeometry& g) {
  const std::int64_t cols = g.r * g.s * g.cg();
  const std::int64_t per_image = g.p * g.q * cols;
  return {std::clamp<std::int64_t>(kColBudget / std::max<std::int64_t>(per_image, 1), 1, g.n), cols};
}

// col[m, (r*S+s)*Cg + c] = x[n, ih, iw, c0 + c] for the output pixels m of images [n0, n0 + nimg).
void im2col(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, std::int64_t n0, std::int64_t nimg,
            std::int64_t c0, float* col) {
  const std::int64_t cg = g.cg(), cols = g.r * g.s * cg, rows = nimg * g.p * g.q;
#pragma omp parallel for schedule(static)
  for (std::int64_t m = 0; m < rows; ++m) {
    const std::int64_t n = n0 + m / (g.p * g.q), oq = m % g.q, op = (m / g.q) % g.p;
    float* dst = col + m * cols;
    for (std::int64_t r = 0; r < g.r; ++r) {
      const std::int64_t ih = op * p.stride_h - p.pad_h + r * p.dilation_h;
      for (std::int64_t s = 0; s < g.s; ++s, dst += cg) {
        const std::int64_t iw = oq * p.stride_w - p.pad_w + s * p.dilation_w;
        if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w)
          std::fill(dst, dst + cg, 0.0f);
        else
          std::memcpy(dst, x + ((n * g.h + ih) * g.w + iw) * g.c + c0, static_cast<std::size_t>(cg) * sizeof(float));
      }
    }
  }
}

// The adjoint of im2col, as a gather so that threads never write the same dx element:
// dx[n, ih, iw, c0 + c] (=|+=) sum over the taps (r, s) that read it of col[m(oh, ow), (r*S+s)*Cg + c].
void col2im(const Conv2dParams& p, const Conv2dGeometry& g, const float* col, std::int64_t n0, std::int64_t nimg,
            std::int64_t c0, float* dx, bool accumulate) {
  const std::int64_t cg = g.cg(), cols = g.r * g.s * cg, pixels = nimg * g.h * g.w;
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<std::size_t>(cg));
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < pixels; ++i) {
      const std::int64_t nl = i / (g.h * g.w), ih = (i / g.w) % g.h, iw = i % g.w;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (std::int64_t r = 0; r < g.r; ++r) {
        const std::int64_t th = ih + p.pad_h - r * p.dilation_h;
        if (th < 0 || th % p.stride_h != 0 || th / p.stride_h >= g.p) continue;
        const std::int64_t oh = th / p.stride_h;
        for (std::int64_t s = 0; s < g.s; ++s) {
          const std::int64_t tw = iw + p.pad_w - s * p.dilation_w;
          if (tw < 0 || tw % p.stride_w != 0 || tw / p.stride_w >= g.q) continue;
          const std::int64_t ow = tw / p.stride_w;
          const float* src = col + ((nl * g.p + oh) * g.q + ow) * cols + (r * g.s + s) * cg;
          for (std::int64_t c = 0; c < cg; ++c) acc[static_cast<std::size_t>(c)] += src[c];
        }
      }
      float* dst = dx + (((n0 + nl) * g.h + ih) * g.w + iw) * g.c + c0;
      if (accumulate)
        for (std::int64_t c = 0; c < cg; ++c) dst[c] += acc[static_cast<std::size_t>(c)];
      else
        std::copy(acc.begin(), acc.end(), dst);
    }
  }
}

}  // namespace

// dbias[k] (=|+=) sum over rows of dy[rows, K], in f64; per-thread partials are added in thread
// order, so the bits do not depend on scheduling.
void bias_grad(const float* dy, std::int64_t rows, std::int64_t k, float* dbias, bool accumulate) {
  const auto kk = static_cast<std::size_t>(k);
  std::vector<double> parts(kk * static_cast<std::size_t>(omp_get_max_threads()), 0.0);
  int used = 1;
#pragma omp parallel
  {
#pragma omp single
    used = omp_get_num_threads();
    double* part = parts.data() + kk * static_cast<std::size_t>(omp_get_thread_num());
#pragma omp for schedule(static)
    for (std::int64_t m = 0; m < rows; ++m)
      for (std::int64_t j = 0; j < k; ++j) part[j] += dy[m * k + j];
  }
  for (std::int64_t j = 0; j < k; ++j) {
    double total = accumulate ? dbias[j] : 0.0;
    for (int t = 0; t < used; ++t) total += parts[static_cast<std::size_t>(t) * kk + static_cast<std::size_t>(j)];
    dbias[j] = static_cast<float>(total);
  }
}

void gemm_conv2d_fwd(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* w, const float* bias,
                     float* y) {
  const std::int64_t rows_total = g.n * g.p * g.q, kg = g.kg();
  const float beta = bias ? 1.0f : 0.0f;
  if (bias) {
#pragma omp parallel for schedule(static)
    for (std::int64_t m = 0; m < rows_total; ++m) std::copy(bias, bias + g.k, y + m * g.k);
  }
  if (is_pointwise(p, g)) {
    for (std::int64_t gi = 0; gi < g.groups; ++gi)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, to_int(rows_total), to_int(kg), to_int(g.cg()), 1.0f,
                  x + gi * g.cg(), to_int(g.c), w + gi * kg * g.cg(), to_int(g.cg()), beta, y + gi * kg, to_int(g.k));
    return;
  }
  const Chunking ch = chunking(g);
  std::vector<float> col(static_cast<std::size_t>(ch.images * g.p * g.q * ch.cols));
  for (std::int64_t n0 = 0; n0 < g.n; n0 += ch.images) {
    const std::int64_t nimg = std::min(ch.images, g.n - n0), rows = nimg * g.p * g.q;
    for (std::int64_t gi = 0; gi < g.groups; ++gi) {
      im2col(p, g, x, n0, nimg, gi * g.cg(), col.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, to_int(rows), to_int(kg), to_int(ch.cols), 1.0f, col.data(),
                  to_int(ch.cols), w + gi * kg * ch.cols, to_int(ch.cols), beta, y + n0 * g.p * g.q * g.k + gi * kg,
                  to_int(g.k));
    }
  }
}

void gemm_conv2d_bwd_data(const Conv2dParams& p, const Conv2dGeometry& g, const float* dy, const float* w, float* dx,
                          GradMode mode) {
  const bool acc = mode == GradMode::Accumulate;
  const std::int64_t kg = g.kg();
  if (is_pointwise(p, g)) {
    for (std::int64_t gi = 0; gi < g.groups; ++gi)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, to_int(g.n * g.h * g.w), to_int(g.cg()), to_int(kg), 1.0f,
                  dy + gi * kg, to_int(g.k), w + gi * kg * g.cg(), to_int(g.cg()), acc ? 1.0f : 0.0f, dx + gi * g.cg(),
                  to_int(g.c));
    return;
  }
  const Chunking ch = chunking(g);
  std::vector<float> col(static_cast<std::size_t>(ch.images * g.p * g.q * ch.cols));
  for (std::int64_t n0 = 0; n0 < g.n; n0 += ch.images) {
    const std::int64_t nimg = std::min(ch.images, g.n - n0), rows = nimg * g.p * g.q;
    for (std::int64_t gi = 0; gi < g.groups; ++gi) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, to_int(rows), to_int(ch.cols), to_int(kg), 1.0f,
                  dy + n0 * g.p * g.q * g.k + gi * kg, to_int(g.k), w + gi * kg * ch.cols, to_int(ch.cols), 0.0f,
                  col.data(), to_int(ch.cols));
      col2im(p, g, col.data(), n0, nimg, gi * g.cg(), dx, acc);
    }
  }
}

void gemm_conv2d_bwd_filter(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* dy, float* dw,
                            float* dbias, GradMode mode) {
  const bool acc = mode == GradMode::Accumulate;
  const std::int64_t kg = g.kg();
  if (dbias) bias_grad(dy, g.n * g.p * g.q, g.k, dbias, acc);
  if (is_pointwise(p, g)) {
    for (std::int64_t gi = 0; gi < g.groups; ++gi)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, to_int(kg), to_int(g.cg()), to_int(g.n * g.p * g.q), 1.0f,
                  dy + gi * kg, to_int(g.k), x + gi * g.cg(), to_int(g.c), acc ? 1.0f : 0.0f, dw + gi * kg * g.cg(),
                  to_int(g.cg()));
    return;
  }
  const Chunking ch = chunking(g);
  std::vector<float> col(static_cast<std::size_t>(ch.images * g.p * g.q * ch.cols));
  for (std::int64_t n0 = 0; n0 < g.n; n0 += ch.images) {
    const std::int64_t nimg = std::min(ch.images, g.n - n0), rows = nimg * g.p * g.q;
    const float beta = (acc || n0 > 0) ? 1.0f : 0.0f;
    for (std::int64_t gi = 0; gi < g.groups; ++gi) {
      im2col(p, g, x, n0, nimg, gi * g.cg(), col.data());
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, to_int(kg), to_int(ch.cols), to_int(rows), 1.0f,
                  dy + n0 * g.p * g.q * g.k + gi * kg, to_int(g.k), col.data(), to_int(ch.cols), beta,
                  dw + gi * kg * ch.cols, to_int(ch.cols));
    }
  }
}

#ifdef GPPF_HAVE_ONEDNN
bool conv2d_uses_onednn() { return true; }
#else
bool conv2d_uses_onednn() { return false; }
#endif

void conv2d_fwd(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* w, const float* bias,
                float* y) {
#ifdef GPPF_HAVE_ONEDNN
  onednn::conv2d_fwd(p, g, x, w, bias, y);
#else
  gemm_conv2d_fwd(p, g, x, w, bias, y);
#endif
}

void conv2d_bwd_data(const Conv2dParams& p, const Conv2dGeometry& g, const float* dy, const float* w, float* dx,
                     GradMode mode) {
  if (pointwise_few_outputs(p, g)) return pointwise_few_outputs_bwd_data(g, dy, w, dx, mode);
#ifdef GPPF_HAVE_ONEDNN
  onednn::conv2d_bwd_data(p, g, dy, w, dx, mode);
#else
  gemm_conv2d_bwd_data(p, g, dy, w, dx, mode);
#endif
}

void conv2d_bwd_filter(const Conv2dParams& p, const Conv2dGeometry& g, const float* x, const float* dy, float* dw,
                       float* dbias, GradMode mode) {
  if (pointwise_few_outputs(p, g)) return pointwise_few_outputs_bwd_filter(g, x, dy, dw, dbias, mode);
#ifdef GPPF_HAVE_ONEDNN
  onednn::conv2d_bwd_filter(p, g, x, dy, dw, dbias, mode);
#else
  gemm_conv2d_bwd_filter(p, g, x, dy, dw, dbias, mode);
#endif
}

}  // namespace gppf::kernels::host
