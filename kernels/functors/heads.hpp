#pragma once
// The index map of kernels/heads.hpp, shared by both backends: row r of tokens [n, t, parts, heads]
// (dh values each) is row (n, head, t) of part p's heads [n, heads, t, dh]. The host copies whole rows;
// CUDA runs the functors below over the tokens' words (one word: a value, or several values of a row
// moved as one wider load and store), so that the tokens side is read or written coalesced.
#include <cstdint>

#include "core/hd.hpp"
#include "kernels/heads.hpp"

namespace gppf::kernels {

struct HeadsRow {
  int part;
  std::int64_t row;
};

GPPF_HD GPPF_INLINE HeadsRow heads_row_of(const HeadsShape& g, std::int64_t r) {
  const std::int64_t head = r % g.heads;
  r /= g.heads;
  const auto part = static_cast<int>(r % g.parts);
  r /= g.parts;
  const std::int64_t token = r % g.t, image = r / g.t;
  return {part, (image * g.heads + head) * g.t + token};
}

// g.dh counts words here: W is the unit that a thread moves.
template <class W>
struct TokensToHeadsFunctor {
  const W* tokens;
  W* parts[kMaxHeadParts];
  HeadsShape g;
  GPPF_HD void operator()(std::int64_t i) const {
    const std::int64_t r = i / g.dh, e = i - r * g.dh;
    const HeadsRow d = heads_row_of(g, r);
    parts[d.part][d.row * g.dh + e] = tokens[i];
  }
};

template <class W>
struct HeadsToTokensFunctor {
  const W* parts[kMaxHeadParts];
  W* tokens;
  HeadsShape g;
  GPPF_HD void operator()(std::int64_t i) const {
    const std::int64_t r = i / g.dh, e = i - r * g.dh;
    const HeadsRow d = heads_row_of(g, r);
    tokens[i] = parts[d.part][d.row * g.dh + e];
  }
};

}  // namespace gppf::kernels
