#include "kernels/ref/heads.hpp"

#include "core/error.hpp"

namespace gppf::kernels::ref {
namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// Index of value (b, i, p, h, e) in the tokens and of (b, h, i, e) in part p.
std::size_t tokens_at(const HeadsShape& g, std::int64_t b, std::int64_t i, std::int64_t p, std::int64_t h,
                      std::int64_t e) {
  return at((((b * g.t + i) * g.parts + p) * g.heads + h) * g.dh + e);
}
std::size_t heads_at(const HeadsShape& g, std::int64_t b, std::int64_t i, std::int64_t h, std::int64_t e) {
  return at(((b * g.heads + h) * g.t + i) * g.dh + e);
}

// f(tokens index, part, part index) for every value.
template <class F>
void for_each_value(const HeadsShape& g, const F& f) {
  for (std::int64_t b = 0; b < g.n; ++b)
    for (std::int64_t i = 0; i < g.t; ++i)
      for (std::int64_t p = 0; p < g.parts; ++p)
        for (std::int64_t h = 0; h < g.heads; ++h)
          for (std::int64_t e = 0; e < g.dh; ++e) f(tokens_at(g, b, i, p, h, e), at(p), heads_at(g, b, i, h, e));
}

std::int64_t numel(const HeadsShape& g) { return g.n * g.t * g.parts * g.heads * g.dh; }

}  // namespace

std::vector<Vec> tokens_to_heads(const HeadsShape& g, const Vec& tokens) {
  GPPF_CHECK(tokens.size() == at(numel(g)), "ref::tokens_to_heads: ", tokens.size(), " values, expected ", numel(g));
  std::vector<Vec> parts(at(g.parts), Vec(at(g.n * g.heads * g.t * g.dh)));
  for_each_value(g, [&](std::size_t ti, std::size_t p, std::size_t hi) { parts[p][hi] = tokens[ti]; });
  return parts;
}

Vec heads_to_tokens(const HeadsShape& g, const std::vector<Vec>& parts) {
  GPPF_CHECK(parts.size() == at(g.parts), "ref::heads_to_tokens: ", parts.size(), " parts, expected ", g.parts);
  for (const Vec& part : parts)
    GPPF_CHECK(part.size() == at(g.n * g.heads * g.t * g.dh), "ref::heads_to_tokens: a part of ", part.size(),
               " values, expected ", g.n * g.heads * g.t * g.dh);
  Vec tokens(at(numel(g)));
  for_each_value(g, [&](std::size_t ti, std::size_t p, std::size_t hi) { tokens[ti] = parts[p][hi]; });
  return tokens;
}

}  // namespace gppf::kernels::ref
