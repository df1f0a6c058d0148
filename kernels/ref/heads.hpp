#pragma once
// Plain references of kernels/heads.hpp, straight from the layouts: tokens [n, t, parts, heads, dh]
// and `parts` head tensors [n, heads, t, dh], as flat row-major vectors.
//   split_heads = tokens_to_heads with 3 parts, merge_heads_bwd with 1;
//   merge_heads = heads_to_tokens with 1 part, split_heads_bwd with 3.
#include <vector>

#include "kernels/heads.hpp"

namespace gppf::kernels::ref {

using Vec = std::vector<double>;

std::vector<Vec> tokens_to_heads(const HeadsShape& g, const Vec& tokens);
Vec heads_to_tokens(const HeadsShape& g, const std::vector<Vec>& parts);

}  // namespace gppf::kernels::ref
