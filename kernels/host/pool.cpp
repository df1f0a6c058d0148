// Host pooling: loops over output pixels with the channel loop innermost (contiguous in NHWC, so it
// vectorises). Backward scatters each window into dx; images (and channel blocks) are split across
// threads so that overlapping windows never race.
#include "kernels/functors/pool.hpp"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/pool.hpp"

namespace gppf::kernels::host {
namespace {

constexpr std::int64_t kChannelBlock = 64;

int threads_for(std::int64_t elements) { return elements >= kParallelThreshold ? omp_get_max_threads() : 1; }

template <class T>
void pool_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y, bool avg) {
  const PoolGeom g = pool_geom(p, x.shape());
  const T* xs = static_cast<const T*>(x.data());
  T* ys = static_cast<T*>(y.data());
  const auto nc = static_cast<std::size_t>(g.c);
#pragma omp parallel num_threads(threads_for(y.numel() * p.kernel_h * p.kernel_w))
  {
    std::vector<float> acc(nc);
#pragma omp for schedule(static)
    for (std::int64_t row = 0; row < g.n * g.oh; ++row) {
      const std::int64_t n = row / g.oh, oy = row % g.oh;
      std::int64_t h0, h1;
      pool_window(oy, g.kh, g.sh, g.ph, g.h, h0, h1);
      for (std::int64_t ox = 0; ox < g.ow; ++ox) {
        std::int64_t w0, w1;
        pool_window(ox, g.kw, g.sw, g.pw, g.w, w0, w1);
        // Max starts from the window's first element (as the reference and CUDA do), so NaN handling
        // agrees across backends.
        const T* first = xs + ((n * g.h + h0) * g.w + w0) * g.c;
        for (std::size_t c = 0; c < nc; ++c) acc[c] = avg ? 0.0f : normpool::load(first[c]);
        for (std::int64_t hy = h0; hy < h1; ++hy)
          for (std::int64_t wx = w0; wx < w1; ++wx) {
            const T* xp = xs + ((n * g.h + hy) * g.w + wx) * g.c;
            if (avg)
              for (std::size_t c = 0; c < nc; ++c) acc[c] += normpool::load(xp[c]);
            else
              for (std::size_t c = 0; c < nc; ++c) acc[c] = std::max(acc[c], normpool::load(xp[c]));
          }
        const float scale = avg ? pool_avg_scale(g, h0, h1, w0, w1) : 1.0f;
        T* yp = ys + ((n * g.oh + oy) * g.ow + ox) * g.c;
        for (std::size_t c = 0; c < nc; ++c) yp[c] = normpool::store<T>(acc[c] * scale);
      }
    }
  }
}

// Scatters every window of image n, channels [c0, c1), into dx (zeroed here first).
template <class T>
void pool_bwd_block(const PoolGeom& g, const T* xs, const T* dys, T* dxs, std::int64_t n, std::int64_t c0,
                    std::int64_t c1, bool avg, float* acc, std::int32_t* arg) {
  const std::int64_t nc = c1 - c0;
  for (std::int64_t q = 0; q < g.h * g.w; ++q) {
    T* dp = dxs + (n * g.h * g.w + q) * g.c + c0;
    for (std::int64_t c = 0; c < nc; ++c) dp[c] = normpool::store<T>(0.0f);
  }
  for (std::int64_t oy = 0; oy < g.oh; ++oy) {
    std::int64_t h0, h1;
    pool_window(oy, g.kh, g.sh, g.ph, g.h, h0, h1);
    for (std::int64_t ox = 0; ox < g.ow; ++ox) {
      std::int64_t w0, w1;
      pool_window(ox, g.kw, g.sw, g.pw, g.w, w0, w1);
      const T* dyp = dys + ((n * g.oh + oy) * g.ow + ox) * g.c + c0;
      if (avg) {
        const float scale = pool_avg_scale(g, h0, h1, w0, w1);
        for (std::int64_t hy = h0; hy < h1; ++hy)
          for (std::int64_t wx = w0; wx < w1; ++wx) {
            T* dp = dxs + ((n * g.h + hy) * g.w + wx) * g.c + c0;
            for (std::int64_t c = 0; c < nc; ++c)
              dp[c] = normpool::store<T>(normpool::load(dp[c]) + normpool::load(dyp[c]) * scale);
          }
        continue;
      }
      // First maximum in row-major window order: strict > keeps the earliest of equal values. The
      // winner is kept as its position in the window so that the scatter below is a vectorisable
      // compare-and-add per window position rather than an indexed store per channel.
      const T* first = xs + ((n * g.h + h0) * g.w + w0) * g.c + c0;
      for (std::int64_t c = 0; c < nc; ++c) {
        acc[c] = normpool::load(first[c]);
        arg[c] = 0;
      }
      std::int32_t pos = 0;
      for (std::int64_t hy = h0; hy < h1; ++hy)
        for (std::int64_t wx = w0; wx < w1; ++wx, ++pos) {
          const T* xp = xs + ((n * g.h + hy) * g.w + wx) * g.c + c0;
          for (std::int64_t c = 0; c < nc; ++c) {
            // Branch-free (a mask, not a ?: on the index) so that gcc vectorises it.
            const float v = normpool::load(xp[c]), a = acc[c];
            const std::int32_t better = -static_cast<std::int32_t>(v > a);
            acc[c] = std::max(a, v);
            arg[c] = (pos & better) | (arg[c] & ~better);
          }
        }
      pos = 0;
      for (std::int64_t hy = h0; hy < h1; ++hy)
        for (std::int64_t wx = w0; wx < w1; ++wx, ++pos) {
          T* dp = dxs + ((n * g.h + hy) * g.w + wx) * g.c + c0;
          for (std::int64_t c = 0; c < nc; ++c) {
            const float d = normpool::load(dyp[c]);
            dp[c] = normpool::store<T>(normpool::load(dp[c]) + (arg[c] == pos ? d : 0.0f));
          }
        }
    }
  }
}

template <class T>
void pool_bwd(const Pool2dParams& p, const Tensor* x, const Tensor& dy, Tensor& dx, bool avg) {
  const PoolGeom g = pool_geom(p, dx.shape());
  const std::int64_t blocks = (g.c + kChannelBlock - 1) / kChannelBlock;
  const T* xs = x ? static_cast<const T*>(x->data()) : nullptr;
  const T* dys = static_cast<const T*>(dy.data());
  T* dxs = static_cast<T*>(dx.data());
#pragma omp parallel num_threads(threads_for(dx.numel() + dy.numel() * p.kernel_h * p.kernel_w))
  {
    std::vector<float> acc(static_cast<std::size_t>(kChannelBlock));
    std::vector<std::int32_t> arg(static_cast<std::size_t>(kChannelBlock));
#pragma omp for schedule(static)
    for (std::int64_t task = 0; task < g.n * blocks; ++task) {
      const std::int64_t n = task / blocks, c0 = (task % blocks) * kChannelBlock;
      pool_bwd_block(g, xs, dys, dxs, n, c0, std::min(c0 + kChannelBlock, g.c), avg, acc.data(), arg.data());
    }
  }
}

template <class T>
void gap_fwd(const Tensor& x, Tensor& y) {
  const std::int64_t n = x.dim(0), hw = x.dim(1) * x.dim(2), c = x.dim(3);
  const T* xs = static_cast<const T*>(x.data());
  T* ys = static_cast<T*>(y.data());
  const float scale = 1.0f / static_cast<float>(hw);
  const std::int64_t blocks = (c + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) num_threads(threads_for(x.numel()))
  for (std::int64_t task = 0; task < n * blocks; ++task) {
    const std::int64_t b = task / blocks, c0 = (task % blocks) * kChannelBlock;
    const std::int64_t nc = std::min(c0 + kChannelBlock, c) - c0;
    double acc[kChannelBlock] = {};
    float part[kChannelBlock];
    // f32 partials over short runs of pixels, folded into f64: long images stay accurate.
    for (std::int64_t q0 = 0; q0 < hw; q0 += 64) {
      std::fill(part, part + nc, 0.0f);
      for (std::int64_t q = q0; q < std::min(q0 + 64, hw); ++q) {
        const T* xp = xs + (b * hw + q) * c + c0;
        for (std::int64_t k = 0; k < nc; ++k) part[k] += normpool::load(xp[k]);
      }
      for (std::int64_t k = 0; k < nc; ++k) acc[k] += part[k];
    }
    for (std::int64_t k = 0; k < nc; ++k) ys[b * c + c0 + k] = normpool::store<T>(static_cast<float>(acc[k]) * scale);
  }
}

template <class T>
void gap_bwd(const Tensor& dy, Tensor& dx, GradMode mode) {
  const std::int64_t n = dx.dim(0), hw = dx.dim(1) * dx.dim(2), c = dx.dim(3);
  const GlobalAvgPoolBwdFunctor<T> f{static_cast<const T*>(dy.data()), static_cast<T*>(dx.data()),  hw, c,
                                     1.0f / static_cast<float>(hw),    mode == GradMode::Accumulate};
#pragma omp parallel for schedule(static) num_threads(threads_for(dx.numel()))
  for (std::int64_t row = 0; row < n * hw; ++row) {
    const std::int64_t b = row / hw;
    for (std::int64_t k = 0; k < c; ++k) f.at(row * c + k, b, k);
  }
}

}  // namespace

void maxpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y) {
  if (x.dtype() == DType::BF16)
    pool_fwd<bf16>(p, x, y, false);
  else
    pool_fwd<float>(p, x, y, false);
}

void maxpool2d_bwd(const Pool2dParams& p, const Tensor& x, const Tensor&, const Tensor& dy, Tensor& dx) {
  if (x.dtype() == DType::BF16)
    pool_bwd<bf16>(p, &x, dy, dx, false);
  else
    pool_bwd<float>(p, &x, dy, dx, false);
}

void avgpool2d_fwd(const Pool2dParams& p, const Tensor& x, Tensor& y) {
  if (x.dtype() == DType::BF16)
    pool_fwd<bf16>(p, x, y, true);
  else
    pool_fwd<float>(p, x, y, true);
}

void avgpool2d_bwd(const Pool2dParams& p, const Tensor& dy, Tensor& dx) {
  if (dx.dtype() == DType::BF16)
    pool_bwd<bf16>(p, nullptr, dy, dx, true);
  else
    pool_bwd<float>(p, nullptr, dy, dx, true);
}

void global_avgpool_fwd(const Tensor& x, Tensor& y) {
  if (x.dtype() == DType::BF16)
    gap_fwd<bf16>(x, y);
  else
    gap_fwd<float>(x, y);
}

void global_avgpool_bwd(const Tensor& dy, Tensor& dx, GradMode mode) {
  if (dx.dtype() == DType::BF16)
    gap_bwd<bf16>(dy, dx, mode);
  else
    gap_bwd<float>(dy, dx, mode);
}

}  // namespace gppf::kernels::host
