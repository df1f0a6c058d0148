#pragma once
// ViTDet's simple feature pyramid (Li et al. 2022): the multi-scale levels a dense head's FPN neck
// reads, built from a plain backbone's one map (gppf-vit's token map at stride P). Each level comes
// from the map on its own, at scale 2^e of it:
//   e >= 1: e transposed convolutions 2x2 stride 2, each halving the channels, GELU between them;
//   e == 0: the map itself;
//   e <= -1: a max pool of window and stride 2^-e.
// A 2x2 stride-2 transposed convolution is a GEMM of each token to 4 C values, then depth to space:
// the GEMM's rows [N h w, 4 C] are [N h, w, 2, 2 C], and the image [N, 2h, 2w, C] is [N h, 2, w, 2 C],
// so depth to space is merge_heads on that view (kernels/heads.hpp, both backends; its adjoint is
// merge_heads_bwd). Its bias has one value per output pixel of the 2x2 cell (4 C; a transposed
// convolution's C shared values are the special case).
// Each head owns its pyramid (ViTDet's layout: nothing here is shared between tasks).
#include <memory>
#include <vector>

#include "src/nn/layers.hpp"

namespace gppf::nn {

class SimplePyramid final : public Module {
 public:
  // exponents: the levels' log2 scales, fine to coarse (strictly decreasing, in [-4, 3]); used: per
  // level, whether the head reads it. Levels not used are not built and come back undefined.
  // dim: the map's channels, divisible by 2^e of the finest used level.
  SimplePyramid(const std::string& name, int dim, const std::vector<int>& exponents, const std::vector<bool>& used,
                std::mt19937_64& rng);
  // map [N, h, w, dim] -> one tensor per level, [N, h 2^e, w 2^e, channels(level)] (floor for pools).
  std::vector<Tensor> forward(const RunState& rs, const Tensor& map);
  // One gradient per level (undefined: the level got none) -> the map's gradient (written).
  Tensor backward(const RunState& rs, const std::vector<Tensor>& d_levels);
  void collect_parameters(std::vector<Parameter*>& out) override;

  std::vector<int> channels() const;  // per level, built or not
  std::vector<Shape> output_shapes(const Shape& map) const;
  std::int64_t macs(const Shape& map) const;

 private:
  struct Level {
    int exponent = 0;
    bool used = false;
    std::vector<std::unique_ptr<Linear>> up;  // e >= 1: the transposed convolutions, map first
    std::vector<Tensor> pre_gelu;             // their outputs before GELU (the last has none), saved
    Tensor pooled;                            // e <= -1: the pool's output, saved for its backward
  };
  Tensor upsample(const RunState& rs, Level& level, const Tensor& map);
  Tensor upsample_bwd(const RunState& rs, Level& level, const Tensor& dy);

  int m_dim;
  std::vector<Level> m_levels;
  Tensor m_map;  // the last training forward's input (the pools' backward needs it)
};

}  // namespace gppf::nn
