#include "src/nn/pyramid.hpp"

#include "kernels/attention.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/heads.hpp"
#include "kernels/pool.hpp"

namespace gppf::nn {
namespace {

kernels::Pool2dParams pool_of(int exponent) {
  const int k = 1 << -exponent;
  kernels::Pool2dParams p;
  p.kernel_h = p.kernel_w = p.stride_h = p.stride_w = k;
  return p;
}

// Adds g to *sum, or makes it the sum when there is none yet.
void add_to(Tensor& sum, const Tensor& g, const Stream& s) {
  if (!sum.defined()) {
    sum = Tensor::empty(g.shape(), g.dtype(), g.device());
    sum.copy_from(g, s);
  } else {
    kernels::axpby(1.0f, g, 1.0f, sum, s);
  }
}

}  // namespace

SimplePyramid::SimplePyramid(const std::string& name, int dim, const std::vector<int>& exponents,
                             const std::vector<bool>& used, std::mt19937_64& rng)
    : m_dim(dim) {
  GPPF_CHECK(!exponents.empty() && used.size() == exponents.size(), name, ": pyramid of ", exponents.size(),
             " levels, ", used.size(), " flags of use");
  for (std::size_t i = 0; i < exponents.size(); ++i) {
    const int e = exponents[i];
    GPPF_CHECK(e >= -4 && e <= 3 && (i == 0 || e < exponents[i - 1]), name,
               ": pyramid scales must be powers of two from 1/16 to 8, fine to coarse, without repeats");
    Level level;
    level.exponent = e;
    level.used = used[i];
    if (level.used && e > 0) {
      GPPF_CHECK(dim % (1 << e) == 0, name, ": width ", dim, " does not halve ", e, " times for scale ", 1 << e);
      for (int j = 0, c = dim; j < e; ++j, c /= 2)
        level.up.push_back(std::make_unique<Linear>(str(name, ".x", 1 << e, ".up", j), c, 2 * c, rng));
    }
    m_levels.push_back(std::move(level));
  }
}

Tensor SimplePyramid::upsample(const RunState& rs, Level& level, const Tensor& map) {
  Tensor x = map;
  level.pre_gelu.clear();
  for (std::size_t j = 0; j < level.up.size(); ++j) {
    const std::int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
    // [N h w, 4 (C/2)] = [N h, w, 2, 2 (C/2)] -> [N h, 2, w 2 (C/2)] = [N, 2h, 2w, C/2].
    Tensor rows = level.up[j]->forward(rs, x.reshape({n * h * w, c}));
    Tensor image = Tensor::empty({n * h, 2, w * c}, rows.dtype(), rows.device());
    kernels::merge_heads(rows.reshape({n * h, w, 2, c}), image, rs.stream);
    x = image.reshape({n, 2 * h, 2 * w, c / 2});
    if (j + 1 < level.up.size()) {
      if (rs.training) level.pre_gelu.push_back(x);
      Tensor a = Tensor::empty(x.shape(), x.dtype(), x.device());
      kernels::gelu_fwd(x, a, rs.stream);
      x = a;
    }
  }
  return x;
}

Tensor SimplePyramid::upsample_bwd(const RunState& rs, Level& level, const Tensor& dy) {
  Tensor d = dy;
  for (std::size_t j = level.up.size(); j-- > 0;) {
    if (j + 1 < level.up.size()) {
      Tensor da = Tensor::empty(d.shape(), d.dtype(), d.device());
      kernels::gelu_bwd(level.pre_gelu[j], d, da, kernels::GradMode::Overwrite, rs.stream);
      d = da;
    }
    const std::int64_t n = d.dim(0), h = d.dim(1) / 2, w = d.dim(2) / 2, c = d.dim(3) * 2;
    Tensor drows = Tensor::empty({n * h, w, 2, c}, d.dtype(), d.device());
    kernels::merge_heads_bwd(d.reshape({n * h, 2, w * c}), static_cast<int>(w), drows, rs.stream);
    Tensor dx = Tensor::empty({n * h * w, c}, d.dtype(), d.device());
    level.up[j]->backward(rs, drows.reshape({n * h * w, 2 * c}), &dx, kernels::GradMode::Overwrite);
    d = dx.reshape({n, h, w, c});
  }
  level.pre_gelu.clear();
  return d;
}

std::vector<Tensor> SimplePyramid::forward(const RunState& rs, const Tensor& map) {
  GPPF_CHECK(map.ndim() == 4 && map.dim(3) == m_dim, "simple pyramid: map expected [N, h, w, ", m_dim, "], got ",
             map.desc());
  std::vector<Tensor> out(m_levels.size());
  for (std::size_t i = 0; i < m_levels.size(); ++i) {
    Level& level = m_levels[i];
    if (!level.used) continue;
    if (level.exponent > 0) {
      out[i] = upsample(rs, level, map);
    } else if (level.exponent == 0) {
      out[i] = map;
    } else {
      const kernels::Pool2dParams p = pool_of(level.exponent);
      out[i] = Tensor::empty(kernels::pool2d_output_shape(p, map.shape()), map.dtype(), map.device());
      kernels::maxpool2d_fwd(p, map, out[i], rs.stream);
      if (rs.training) level.pooled = out[i];
    }
  }
  if (rs.training) m_map = map;
  return out;
}

Tensor SimplePyramid::backward(const RunState& rs, const std::vector<Tensor>& d_levels) {
  GPPF_CHECK(m_map.defined(), "simple pyramid: backward without a training forward");
  GPPF_CHECK(d_levels.size() == m_levels.size(), "simple pyramid: ", d_levels.size(), " level gradients for ",
             m_levels.size(), " levels");
  Tensor d_map;
  for (std::size_t i = 0; i < m_levels.size(); ++i) {
    Level& level = m_levels[i];
    const Tensor& d = d_levels[i];
    if (!level.used || !d.defined()) continue;
    if (level.exponent > 0) {
      add_to(d_map, upsample_bwd(rs, level, d), rs.stream);
    } else if (level.exponent == 0) {
      add_to(d_map, d, rs.stream);
    } else {
      Tensor dx = Tensor::empty(m_map.shape(), d.dtype(), d.device());
      kernels::maxpool2d_bwd(pool_of(level.exponent), m_map, level.pooled, d, dx, rs.stream);
      add_to(d_map, dx, rs.stream);
    }
  }
  for (Level& level : m_levels) level.pooled = Tensor();
  if (!d_map.defined()) {
    d_map = Tensor::empty(m_map.shape(), m_map.dtype(), m_map.device());
    kernels::fill(d_map, 0.0f, rs.stream);
  }
  m_map = Tensor();
  return d_map;
}

void SimplePyramid::collect_parameters(std::vector<Parameter*>& out) {
  for (Level& level : m_levels)
    for (auto& up : level.up) up->collect_parameters(out);
}

std::vector<int> SimplePyramid::channels() const {
  std::vector<int> c;
  for (const Level& level : m_levels) c.push_back(level.exponent > 0 ? m_dim >> level.exponent : m_dim);
  return c;
}

std::vector<Shape> SimplePyramid::output_shapes(const Shape& map) const {
  std::vector<Shape> out;
  for (const Level& level : m_levels) {
    const int e = level.exponent;
    if (e >= 0)
      out.push_back({map[0], map[1] << e, map[2] << e, static_cast<std::int64_t>(m_dim >> e)});
    else
      out.push_back(kernels::pool2d_output_shape(pool_of(e), map));
  }
  return out;
}

std::int64_t SimplePyramid::macs(const Shape& map) const {
  std::int64_t total = 0;
  for (const Level& level : m_levels) {
    std::int64_t tokens = map[0] * map[1] * map[2];
    for (const auto& up : level.up) {
      total += up->macs(tokens);
      tokens *= 4;
    }
  }
  return total;
}

}  // namespace gppf::nn
