// Host head layout ops: an OpenMP loop over the tokens' rows of Dh values, each one memcpy to or from
// its head row (kernels/functors/heads.hpp). Bytes, not values, are moved: bit-exact for any dtype.
#include "kernels/heads.hpp"

#include <cstring>

#include "kernels/functors/heads.hpp"
#include "kernels/parallel_for.hpp"

namespace gppf::kernels::host {
namespace {

// copy(tokens row offset, head row offset, its part), in bytes, for every row of the tokens.
template <class F>
void for_each_row(const HeadsShape& g, const Tensor& tokens, const F& copy) {
  const std::size_t row_bytes = static_cast<std::size_t>(g.dh) * dtype_size(tokens.dtype());
  const std::int64_t rows = g.n * g.t * g.parts * g.heads;
#pragma omp parallel for schedule(static) if (tokens.numel() >= kParallelThreshold)
  for (std::int64_t r = 0; r < rows; ++r) {
    const HeadsRow d = heads_row_of(g, r);
    copy(static_cast<std::size_t>(r) * row_bytes, static_cast<std::size_t>(d.row) * row_bytes, d.part, row_bytes);
  }
}

}  // namespace

void tokens_to_heads(const HeadsShape& g, const Tensor& tokens, std::span<Tensor* const> parts) {
  const auto* src = static_cast<const unsigned char*>(tokens.data());
  unsigned char* dst[kMaxHeadParts] = {};
  for (std::size_t p = 0; p < parts.size(); ++p) dst[p] = static_cast<unsigned char*>(parts[p]->data());
  for_each_row(g, tokens, [&](std::size_t at_tokens, std::size_t at_head, int part, std::size_t bytes) {
    std::memcpy(dst[part] + at_head, src + at_tokens, bytes);
  });
}

void heads_to_tokens(const HeadsShape& g, std::span<const Tensor* const> parts, Tensor& tokens) {
  auto* dst = static_cast<unsigned char*>(tokens.data());
  const unsigned char* src[kMaxHeadParts] = {};
  for (std::size_t p = 0; p < parts.size(); ++p) src[p] = static_cast<const unsigned char*>(parts[p]->data());
  for_each_row(g, tokens, [&](std::size_t at_tokens, std::size_t at_head, int part, std::size_t bytes) {
    std::memcpy(dst + at_tokens, src[part] + at_head, bytes);
  });
}

}  // namespace gppf::kernels::host
