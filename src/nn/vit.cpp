#include "src/nn/vit.hpp"

#include <random>

#include "kernels/cast.hpp"
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
}

Tensor VitBackbone::forward(const RunState& rs, const Tensor& x, std::int64_t step) {
  GPPF_CHECK(x.ndim() == 4 && x.dim(1) % m_spec.patch == 0 && x.dim(2) % m_spec.patch == 0,
             "vit: input expected [N, H, W, C] with H and W multiples of the patch ", m_spec.patch, ", got ", x.desc());
  Tensor map = m_patch.forward(rs, x);  // [N, h, w, D]: NHWC is the token layout
  const std::int64_t N = map.dim(0), h = map.dim(1), w = map.dim(2), D = map.dim(3);
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
  Tensor flat = map.reshape({N, h * w * D});
  kernels::gemm(false, false, 1.0f, ones, pos.reshape({1, h * w * D}), 1.0f, flat, rs.stream);
  Tensor t = map.reshape({N, h * w, D});
  for (auto& block : m_blocks) t = block->forward(rs, t, step);
  if (rs.training) m_map_shape = map.shape();
  return m_norm.forward(rs, t).reshape(map.shape());
}

void VitBackbone::backward(const RunState& rs, const Tensor& d_map) {
  GPPF_CHECK(!m_map_shape.empty(), "vit: backward without a training forward");
  const Shape s = m_map_shape;
  const std::int64_t N = s[0], h = s[1], w = s[2], D = s[3];
  Tensor d = m_norm.backward(rs, d_map.reshape({N, h * w, D}));
  for (int b = static_cast<int>(m_blocks.size()) - 1; b >= 0; --b) {
    d = m_blocks[static_cast<std::size_t>(b)]->backward(rs, d);
    if (rs.grads_final) (*rs.grads_final)(b);  // block b's MLP legos and routers are final
  }
  // The position embeddings' gradient: the tokens' gradient summed over the samples (then carried
  // back through the interpolation).
  const auto mode = m_pos.take_grad_mode();
  const Tensor rows = d.reshape({N, h * w * D});
  if (h == m_spec.grid_h && w == m_spec.grid_w) {
    Tensor g = m_pos.grad.reshape({h * w * D});
    kernels::reduce_rows(rows, g, mode, rs.stream);
  } else {
    Tensor dresized = Tensor::empty({h * w * D}, DType::F32, d.device());
    kernels::reduce_rows(rows, dresized, kernels::GradMode::Overwrite, rs.stream);
    Tensor g = m_pos.grad.reshape({1, m_spec.grid_h, m_spec.grid_w, D});
    kernels::upsample_bwd(kBilinear, dresized.reshape({1, h, w, D}), g, mode, rs.stream);
  }
  m_patch.backward(rs, d.reshape(s));
  m_map_shape.clear();
}

void VitBackbone::collect_parameters(std::vector<Parameter*>& out) {
  m_patch.collect_parameters(out);
  out.push_back(&m_pos);
  for (auto& block : m_blocks) block->collect_parameters(out);
  m_norm.collect_parameters(out);
}

Shape VitBackbone::output_shape(const Shape& x) const { return m_patch.output_shape(x); }

std::int64_t VitBackbone::macs(const Shape& x, int active) const {
  const Shape m = output_shape(x);
  const std::int64_t N = m[0], T = m[1] * m[2], D = m[3];
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
