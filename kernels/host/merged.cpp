#include "kernels/merged.hpp"

#include <omp.h>

#include <algorithm>

namespace gppf::kernels::host {
namespace {

constexpr std::int64_t kBlock = 64;  // pixels summed in f32 before the f64 partials

// d[p][k] += h[k] - sum_k2 ac[p][k2] * G[k2][k]. K is 8-32 in gppf-mini: a compile-time K lets the
// compiler keep a pixel's row in vector registers (with a run-time K of 8 the loop ran scalar, at 12 GB/s).
template <std::int64_t KK>
void correct_rows(float* d, const float* ac, const float* G, const float* h, std::int64_t pixels, std::int64_t K) {
  const std::int64_t k_n = KK > 0 ? KK : K;
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < pixels; ++p) {
    float* dr = d + p * k_n;
    const float* cr = ac + p * k_n;
    float v[KK > 0 ? KK : 1];
    float* acc = KK > 0 ? v : dr;
    if constexpr (KK > 0)
      for (std::int64_t k = 0; k < KK; ++k) v[k] = dr[k];
    for (std::int64_t k = 0; k < k_n; ++k) acc[k] += h[k];
    for (std::int64_t k2 = 0; k2 < k_n; ++k2) {
      const float c = cr[k2];
      for (std::int64_t k = 0; k < k_n; ++k) acc[k] -= c * G[k2 * k_n + k];
    }
    if constexpr (KK > 0)
      for (std::int64_t k = 0; k < KK; ++k) dr[k] = v[k];
  }
}

}  // namespace

void center_channels(const Tensor& x, const Tensor& mean, Tensor& out) {
  const std::int64_t K = x.dim(-1), pixels = x.numel() / K;
  const float *ap = x.data_as<float>(), *mp = mean.data_as<float>();
  float* cp = out.data_as<float>();
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < pixels; ++p)
    for (std::int64_t k = 0; k < K; ++k) cp[p * K + k] = ap[p * K + k] - mp[k];
}

void add_affine_relu(Tensor& y, const Tensor& shortcut, const Tensor& scale, const Tensor& shift) {
  const std::int64_t C = y.dim(-1), pixels = y.numel() / C;
  const float *sp = shortcut.data_as<float>(), *smp = scale.data_as<float>(), *sap = shift.data_as<float>();
  float* yp = y.data_as<float>();
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < pixels; ++p) {
    float* yr = yp + p * C;
    const float* sr = sp + p * C;
    for (std::int64_t c = 0; c < C; ++c) yr[c] = std::max(yr[c] + smp[c] * sr[c] + sap[c], 0.0f);
  }
}

std::vector<double> relu_bwd_channel_sums(const Tensor& y, const Tensor& dy, const Tensor& z, const Tensor& zmean,
                                          Tensor& da) {
  const std::int64_t C = y.dim(-1), pixels = y.numel() / C;
  const auto nc = static_cast<std::size_t>(C);
  const bool proj = z.defined();
  const float *yp = y.data_as<float>(), *dyp = dy.data_as<float>();
  const float* xp = proj ? z.data_as<float>() : nullptr;
  const float* pmu = proj ? zmean.data_as<float>() : nullptr;
  float* dap = da.data_as<float>();
  const int nt = omp_get_max_threads();
  const std::size_t per = 2 * nc;
  std::vector<double> parts(static_cast<std::size_t>(nt) * per, 0.0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), nthr = omp_get_num_threads();
    double* part = parts.data() + static_cast<std::size_t>(t) * per;
    std::vector<float> acc(per);
    float *sa = acc.data(), *sp = sa + nc;
    const std::int64_t p0 = pixels * t / nthr, p1 = pixels * (t + 1) / nthr;
    for (std::int64_t start = p0; start < p1; start += kBlock) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (std::int64_t p = start; p < std::min(start + kBlock, p1); ++p) {
        float* dar = dap + p * C;
        for (std::int64_t c = 0; c < C; ++c) {
          dar[c] = yp[p * C + c] > 0.0f ? dyp[p * C + c] : 0.0f;
          sa[c] += dar[c];
        }
        if (proj)
          for (std::int64_t c = 0; c < C; ++c) sp[c] += dar[c] * (xp[p * C + c] - pmu[c]);
      }
      for (std::size_t i = 0; i < per; ++i) part[i] += acc[i];
    }
  }
  std::vector<double> sums(per, 0.0);
  for (int t = 0; t < nt; ++t)
    for (std::size_t i = 0; i < per; ++i) sums[i] += parts[static_cast<std::size_t>(t) * per + i];
  return sums;
}

void gram_correct(Tensor& d, const Tensor& ac, const Tensor& g, const Tensor& h) {
  const std::int64_t K = d.dim(-1), pixels = d.numel() / K;
  float* dp = d.data_as<float>();
  const float *cp = ac.data_as<float>(), *G = g.data_as<float>(), *hp = h.data_as<float>();
  switch (K) {
    case 8: return correct_rows<8>(dp, cp, G, hp, pixels, K);
    case 16: return correct_rows<16>(dp, cp, G, hp, pixels, K);
    case 32: return correct_rows<32>(dp, cp, G, hp, pixels, K);
    default: return correct_rows<0>(dp, cp, G, hp, pixels, K);
  }
}

void bn_input_grad(const Tensor& da, const Tensor& z, const Tensor& zmean, const Tensor& k1, const Tensor& k0,
                   const Tensor& k2, Tensor& out) {
  const std::int64_t C = da.dim(-1), pixels = da.numel() / C;
  const float *dap = da.data_as<float>(), *xp = z.data_as<float>(), *pmu = zmean.data_as<float>();
  const float *q1p = k1.data_as<float>(), *q0p = k0.data_as<float>(), *q2p = k2.data_as<float>();
  float* dzpp = out.data_as<float>();
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < pixels; ++p)
    for (std::int64_t c = 0; c < C; ++c)
      dzpp[p * C + c] = q1p[c] * dap[p * C + c] - q0p[c] - q2p[c] * (xp[p * C + c] - pmu[c]);
}

}  // namespace gppf::kernels::host
