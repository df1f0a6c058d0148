// CUDA head layout ops: one grid-stride kernel per call (all of q, k, v in one), a thread per word of
// the tokens (kernels/functors/heads.hpp). A word is the widest of 16, 8, 4 or 2 bytes that divides a
// head row and aligns every pointer of the call: 16 bytes (one vector load and store per thread) for
// ViT's Dh = 64 in either dtype. Bytes, not values, are moved: bit-exact.
#include <cstdint>
#include <initializer_list>

#include "kernels/cuda/parallel_for.cuh"
#include "kernels/functors/heads.hpp"
#include "kernels/heads.hpp"

namespace gppf::kernels::cuda {
namespace {

std::size_t word_bytes(std::size_t row_bytes, const void* tokens, std::span<const void* const> parts) {
  for (const std::size_t w : {16, 8, 4}) {
    bool fits = row_bytes % w == 0 && reinterpret_cast<std::uintptr_t>(tokens) % w == 0;
    for (const void* p : parts) fits = fits && reinterpret_cast<std::uintptr_t>(p) % w == 0;
    if (fits) return w;
  }
  return 2;  // f32 and bf16 values are 2-byte aligned at least
}

// f(W{}, g) with W the word type and g.dh counting words instead of values.
template <class F>
void with_words(const HeadsShape& bytes_g, const Tensor& tokens, std::span<const void* const> parts, const F& f) {
  const std::size_t row_bytes = static_cast<std::size_t>(bytes_g.dh) * dtype_size(tokens.dtype());
  const std::size_t w = word_bytes(row_bytes, tokens.data(), parts);
  HeadsShape g = bytes_g;
  g.dh = static_cast<std::int64_t>(row_bytes / w);
  switch (w) {
    case 16: f(uint4{}, g); break;
    case 8: f(uint2{}, g); break;
    case 4: f(std::uint32_t{}, g); break;
    default: f(std::uint16_t{}, g); break;
  }
}

std::int64_t words_of(const HeadsShape& g) { return g.n * g.t * g.parts * g.heads * g.dh; }

}  // namespace

void tokens_to_heads(const HeadsShape& g, const Tensor& tokens, std::span<Tensor* const> parts, const Stream& s) {
  const void* ptrs[kMaxHeadParts] = {};
  for (std::size_t p = 0; p < parts.size(); ++p) ptrs[p] = parts[p]->data();
  with_words(g, tokens, std::span(ptrs, parts.size()), [&](auto word, const HeadsShape& gw) {
    using W = decltype(word);
    TokensToHeadsFunctor<W> f{static_cast<const W*>(tokens.data()), {}, gw};
    for (std::size_t p = 0; p < parts.size(); ++p) f.parts[p] = static_cast<W*>(parts[p]->data());
    parallel_for_cuda(words_of(gw), f, gppf::cuda::native(s));
  });
}

void heads_to_tokens(const HeadsShape& g, std::span<const Tensor* const> parts, Tensor& tokens, const Stream& s) {
  const void* ptrs[kMaxHeadParts] = {};
  for (std::size_t p = 0; p < parts.size(); ++p) ptrs[p] = parts[p]->data();
  with_words(g, tokens, std::span(ptrs, parts.size()), [&](auto word, const HeadsShape& gw) {
    using W = decltype(word);
    HeadsToTokensFunctor<W> f{{}, static_cast<W*>(tokens.data()), gw};
    for (std::size_t p = 0; p < parts.size(); ++p) f.parts[p] = static_cast<const W*>(parts[p]->data());
    parallel_for_cuda(words_of(gw), f, gppf::cuda::native(s));
  });
}

}  // namespace gppf::kernels::cuda
