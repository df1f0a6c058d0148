#include "src/nn/vit.hpp"

#include <random>

#include "kernels/cast.hpp"
#include "kernels/concat.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/linear.hpp"
#include "kernels/resample.hpp"

namespace gppf::nn {
namespace {

constexpr kernels::UpsampleParams kBilinear{kernels::UpsampleMode::Bilinear};

ColourConv patch_embedding(const VitSpec& spec, std::mt19937_64& rng) {
  GPPF_CHECK(spec.patch > 0 && spec.dim > 0 && spec.depth > 0 && spec.grid_h > 0 && spec.grid_w > 0,
             "model.vit: patch ", spec.patch, ", dim ", spec.dim, ", depth ", spec.depth, " and grid ", spec.grid_h,
             "x", spec.grid_w, " must be positive");
  return ColourConv("patch_embed", spec.dim, spec.patch, spec.patch, 0, rng);
}

}  // namespace

VitBackbone::VitBackbone(const VitSpec& spec, int num_tasks, std::uint64_t seed)
    : m_spec(spec),
      m_patch([&] {
        std::mt19937_64 rng(seed);
        return patch_embedding(spec, rng);
      }()),
      m_norm("norm", spec.dim) {
  std::mt19937_64 rng(seed + 1);
  // ViT's initialisation of the position embeddings: N(0, 0.02^2).
  std::normal_distribution<float> dist(0.0f, 0.02f);
  Tensor pos = Tensor::empty({spec.grid_h, spec.grid_w, spec.dim}, DType::F32);
  for (std::int64_t i = 0; i < pos.numel(); ++i) pos.data_as<float>()[i] = dist(rng);
  m_pos = make_parameter("pos_embed", pos, false);
  const int hidden = spec.mlp_hidden > 0 ? spec.mlp_hidden : 4 * spec.dim;
  MlpLegoSpec mlp;
  mlp.dim = spec.dim;
  mlp.hidden = std::max(1, hidden / std::max(1, spec.top_k));
  mlp.num_legos = spec.num_legos;
  mlp.top_k = spec.top_k;
  mlp.num_shared = spec.num_shared;
  for (int b = 0; b < spec.depth; ++b) {
    m_blocks.push_back(
        std::make_unique<TransformerBlock>(str("block", b), mlp, spec.heads, num_tasks, spec.routing, rng));
    m_blocks.back()->mlp().set_index(b);
  }
  if (spec.class_token()) {
    // Its own generator: the other parameters draw the same values with or without it.
    std::mt19937_64 cls_rng(seed + 2);
    Tensor cls = Tensor::empty({spec.dim}, DType::F32);
    for (std::int64_t i = 0; i < cls.numel(); ++i) cls.data_as<float>()[i] = dist(cls_rng);
    m_cls = make_parameter("cls_token", cls, false);
  }
}

std::vector<Tensor> VitBackbone::forward(const RunState& rs, const Tensor& x, std::int64_t step) {
  if (!x.defined()) {
    for (auto& block : m_blocks) block->forward(rs, Tensor(), step);
    return {};
  }
  GPPF_CHECK(x.ndim() == 4 && x.dim(1) % m_spec.patch == 0 && x.dim(2) % m_spec.patch == 0,
             "vit: input expected [N, H, W, C] with H and W multiples of the patch ", m_spec.patch, ", got ", x.desc());
  Tensor map = m_patch.forward(rs, x);  // [N, h, w, D]: NHWC is the token layout
  const std::int64_t N = map.dim(0), h = map.dim(1), w = map.dim(2), D = map.dim(3), T = h * w;
  // Position embeddings on this input's grid, added to every sample (a GEMM with a ones column).
  Tensor pos = m_pos.value.reshape({1, m_spec.grid_h, m_spec.grid_w, D});
  if (h != m_spec.grid_h || w != m_spec.grid_w) {
    Tensor resized = Tensor::empty({1, h, w, D}, DType::F32, pos.device());
    kernels::upsample_fwd(kBilinear, pos, resized, rs.stream);
    pos = resized;
  }
  if (pos.dtype() != map.dtype()) pos = kernels::cast(pos, map.dtype(), rs.stream);
  Tensor ones = Tensor::empty({N, 1}, map.dtype(), map.device());
  kernels::fill(ones, 1.0f, rs.stream);
  Tensor flat = map.reshape({N, T * D});
  kernels::gemm(false, false, 1.0f, ones, pos.reshape({1, T * D}), 1.0f, flat, rs.stream);
  Tensor t = map.reshape({N, T, D});
  const bool cls = m_spec.class_token();
  if (cls) {
    // [class token | tokens]: token 0 of every sample is the learned vector.
    Tensor token = m_cls.value.reshape({1, D});
    if (token.dtype() != map.dtype()) token = kernels::cast(token, map.dtype(), rs.stream);
    Tensor rows = Tensor::empty({N, D}, map.dtype(), map.device());
    kernels::gemm(false, false, 1.0f, ones, token, 0.0f, rows, rs.stream);
    t = Tensor::empty({N, T + 1, D}, map.dtype(), map.device());
    Tensor seq = t.reshape({N, (T + 1) * D});
    kernels::concat_channels({rows, flat}, seq, rs.stream);
  }
  for (auto& block : m_blocks) t = block->forward(rs, t, step);
  if (rs.training) m_map_shape = map.shape();
  Tensor out = m_norm.forward(rs, t);
  if (!cls) return {out.reshape(map.shape())};
  Tensor map_out = Tensor::empty(map.shape(), out.dtype(), out.device());
  Tensor token_out = Tensor::empty({N, 1, 1, D}, out.dtype(), out.device());
  std::vector<Tensor> parts = {token_out.reshape({N, D}), map_out.reshape({N, T * D})};
  kernels::split_channels(out.reshape({N, (T + 1) * D}), parts, kernels::GradMode::Overwrite, rs.stream);
  return {map_out, token_out};
}

void VitBackbone::backward(const RunState& rs, const Tensor& d_map, const Tensor& d_token) {
  GPPF_CHECK(!m_map_shape.empty(), "vit: backward without a training forward");
  const bool cls = m_spec.class_token();
  GPPF_CHECK(cls ? d_map.defined() || d_token.defined() : d_map.defined() && !d_token.defined(),
             "vit: backward needs the token map's gradient", cls ? " or the class token's" : "");
  const Shape s = m_map_shape;
  const std::int64_t N = s[0], h = s[1], w = s[2], D = s[3], T = h * w;
  Tensor d_out = d_map.defined() ? d_map.reshape({N, T, D}) : Tensor();
  if (cls) {
    // The gradient of [class token | tokens]; a part no head read is zero.
    const Tensor& any = d_map.defined() ? d_map : d_token;
    auto part = [&](const Tensor& g, std::int64_t cols) {
      if (g.defined()) return g.reshape({N, cols});
      Tensor z = Tensor::empty({N, cols}, any.dtype(), any.device());
      z.zero_(rs.stream);
      return z;
    };
    d_out = Tensor::empty({N, T + 1, D}, any.dtype(), any.device());
    Tensor flat = d_out.reshape({N, (T + 1) * D});
    kernels::concat_channels({part(d_token, D), part(d_map, T * D)}, flat, rs.stream);
  }
  Tensor d = m_norm.backward(rs, d_out);
  for (int b = static_cast<int>(m_blocks.size()) - 1; b >= 0; --b) {
    d = m_blocks[static_cast<std::size_t>(b)]->backward(rs, d);
    if (rs.grads_final) (*rs.grads_final)(b);  // block b's MLP legos and routers are final
  }
  if (cls) {
    std::vector<Tensor> parts = {Tensor::empty({N, D}, d.dtype(), d.device()),
                                 Tensor::empty({N, T * D}, d.dtype(), d.device())};
    kernels::split_channels(d.reshape({N, (T + 1) * D}), parts, kernels::GradMode::Overwrite, rs.stream);
    kernels::reduce_rows(parts[0], m_cls.grad, m_cls.take_grad_mode(), rs.stream);
    d = parts[1];
  }
  // The position embeddings' gradient: the tokens' gradient summed over the samples (then carried
  // back through the interpolation).
  const auto mode = m_pos.take_grad_mode();
  const Tensor rows = d.reshape({N, T * D});
  if (h == m_spec.grid_h && w == m_spec.grid_w) {
    Tensor g = m_pos.grad.reshape({T * D});
    kernels::reduce_rows(rows, g, mode, rs.stream);
  } else {
    Tensor dresized = Tensor::empty({T * D}, DType::F32, d.device());
    kernels::reduce_rows(rows, dresized, kernels::GradMode::Overwrite, rs.stream);
    Tensor g = m_pos.grad.reshape({1, m_spec.grid_h, m_spec.grid_w, D});
    kernels::upsample_bwd(kBilinear, dresized.reshape({1, h, w, D}), g, mode, rs.stream);
  }
  m_patch.backward(rs, d.reshape(s));
  m_map_shape.clear();
}

void VitBackbone::serve_backward(const RunState& rs) {
  for (int b = static_cast<int>(m_blocks.size()) - 1; b >= 0; --b) {
    m_blocks[static_cast<std::size_t>(b)]->backward(rs, Tensor());
    if (rs.grads_final) (*rs.grads_final)(b);
  }
}

std::vector<Shape> VitBackbone::layer_input_shapes(const Shape& x) const {
  const Shape m = output_shape(x);
  const Shape tokens{m[0], m[1] * m[2] + (m_spec.class_token() ? 1 : 0), m[3]};
  return std::vector<Shape>(m_blocks.size(), tokens);
}

void VitBackbone::collect_parameters(std::vector<Parameter*>& out) {
  m_patch.collect_parameters(out);
  out.push_back(&m_pos);
  if (m_spec.class_token()) out.push_back(&m_cls);
  for (auto& block : m_blocks) block->collect_parameters(out);
  m_norm.collect_parameters(out);
}

Shape VitBackbone::output_shape(const Shape& x) const { return m_patch.output_shape(x); }

std::int64_t VitBackbone::macs(const Shape& x, int active) const {
  const Shape m = output_shape(x);
  const std::int64_t N = m[0], T = m[1] * m[2] + (m_spec.class_token() ? 1 : 0), D = m[3];
  std::int64_t total = m_patch.macs(x);
  for (const auto& block : m_blocks) total += N * T * 4 * D * D + 2 * N * T * T * D + block->mlp_macs(N * T, active);
  return total;
}

std::vector<MlpLegoLayer*> VitBackbone::lego_layers() {
  std::vector<MlpLegoLayer*> out;
  for (auto& block : m_blocks) out.push_back(&block->mlp());
  return out;
}

}  // namespace gppf::nn
