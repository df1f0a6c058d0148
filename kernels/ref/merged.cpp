#include "kernels/ref/merged.hpp"

#include <algorithm>

namespace gppf::kernels::ref {

Vec center_channels(const Vec& x, const Vec& mean, std::int64_t C) {
  Vec out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = x[i] - mean[i % static_cast<std::size_t>(C)];
  return out;
}

Vec add_affine_relu(const Vec& y, const Vec& shortcut, const Vec& scale, const Vec& shift, std::int64_t C) {
  Vec out(y.size());
  for (std::size_t i = 0; i < y.size(); ++i) {
    const std::size_t c = i % static_cast<std::size_t>(C);
    out[i] = std::max(0.0, y[i] + scale[c] * shortcut[i] + shift[c]);
  }
  return out;
}

Vec relu_bwd_channel_sums(const Vec& y, const Vec& dy, const Vec& z, const Vec& zmean, std::int64_t C, Vec& da) {
  const auto nc = static_cast<std::size_t>(C);
  Vec sums(2 * nc, 0.0);
  da.assign(y.size(), 0.0);
  for (std::size_t i = 0; i < y.size(); ++i) {
    const std::size_t c = i % nc;
    da[i] = y[i] > 0 ? dy[i] : 0.0;
    sums[c] += da[i];
    if (!z.empty()) sums[nc + c] += da[i] * (z[i] - zmean[c]);
  }
  return sums;
}

Vec gram_correct(const Vec& d, const Vec& ac, const Vec& g, const Vec& h, std::int64_t K) {
  const auto nk = static_cast<std::size_t>(K);
  Vec out = d;
  for (std::size_t p = 0; p < d.size() / nk; ++p)
    for (std::size_t k = 0; k < nk; ++k) {
      double v = h[k];
      for (std::size_t k2 = 0; k2 < nk; ++k2) v -= ac[p * nk + k2] * g[k2 * nk + k];
      out[p * nk + k] += v;
    }
  return out;
}

Vec bn_input_grad(const Vec& da, const Vec& z, const Vec& zmean, const Vec& k1, const Vec& k0, const Vec& k2,
                  std::int64_t C) {
  Vec out(da.size());
  for (std::size_t i = 0; i < da.size(); ++i) {
    const std::size_t c = i % static_cast<std::size_t>(C);
    out[i] = k1[c] * da[i] - k0[c] - k2[c] * (z[i] - zmean[c]);
  }
  return out;
}

}  // namespace gppf::kernels::ref
