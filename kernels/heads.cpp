#include "kernels/heads.hpp"

#include <array>
#include <initializer_list>
#include <string>

#include "core/graph.hpp"
#include "kernels/elementwise.hpp"

namespace gppf::kernels {
namespace {

std::string desc_of(const Tensor& t) { return t.defined() ? t.desc() : std::string("an undefined tensor"); }

// The first tensor of a call: f32 or bf16 with `ndim` dims (`layout` names them in the message).
void check_input(const char* op, const char* what, const Tensor& t, int ndim, const char* layout) {
  GPPF_CHECK(t.defined() && (t.dtype() == DType::F32 || t.dtype() == DType::BF16), op, ": ", what,
             " must be f32 or bf16, got ", desc_of(t));
  GPPF_CHECK(t.ndim() == ndim, op, ": ", what, " must be ", layout, ", got ", t.desc());
}

// t: defined, of this shape, in ref's dtype, on ref's device.
void check_operand(const char* op, const char* what, const Tensor& t, const Shape& shape, const Tensor& ref) {
  GPPF_CHECK(t.defined(), op, ": ", what, " is undefined");
  check_shape(op, what, t, shape);
  check_dtype(op, what, t, ref.dtype());
  GPPF_CHECK(t.device() == ref.device(), op, ": ", what, " ", t.desc(), " must be on ", ref.device().str(), " with ",
             ref.desc());
}

struct Named {
  const char* name;
  const Tensor* t;
};

bool overlap(const Tensor& a, const Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || a.device() != b.device()) return false;
  const auto* pa = static_cast<const unsigned char*>(a.data());
  const auto* pb = static_cast<const unsigned char*>(b.data());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// A permutation cannot run in place: every output needs memory of its own (inputs may share theirs).
void check_disjoint(const char* op, std::initializer_list<Named> outputs, std::initializer_list<Named> inputs) {
  for (auto o = outputs.begin(); o != outputs.end(); ++o) {
    for (auto other = o + 1; other != outputs.end(); ++other)
      GPPF_CHECK(!overlap(*o->t, *other->t), op, ": outputs ", o->name, " ", o->t->desc(), " and ", other->name, " ",
                 other->t->desc(), " overlap; give each its own memory");
    for (const Named& in : inputs)
      GPPF_CHECK(!overlap(*o->t, *in.t), op, ": output ", o->name, " ", o->t->desc(), " overlaps input ", in.name, " ",
                 in.t->desc(), "; the op cannot run in place");
  }
}

// tokens [N, T, parts * D] with D = heads * Dh.
HeadsShape tokens_shape(const char* op, const char* what, const Tensor& tokens, std::int64_t parts, int heads) {
  GPPF_CHECK(heads > 0, op, ": heads must be positive, got ", heads);
  GPPF_CHECK(tokens.dim(2) % parts == 0, op, ": ", what, " ", tokens.desc(), " must be [N, T, ", parts,
             " * D]: its last dim is not a multiple of ", parts);
  const std::int64_t d = tokens.dim(2) / parts;
  GPPF_CHECK(d % heads == 0, op, ": D = ", d, " of ", what, " ", tokens.desc(), " is not divisible by heads = ", heads);
  return {tokens.dim(0), tokens.dim(1), parts, heads, d / heads};
}

Shape heads_layout(const HeadsShape& g) { return {g.n, g.heads, g.t, g.dh}; }
Shape tokens_layout(const HeadsShape& g) { return {g.n, g.t, g.parts * g.heads * g.dh}; }

HeadsShape heads_shape(const Tensor& x, std::int64_t parts) { return {x.dim(0), x.dim(2), parts, x.dim(1), x.dim(3)}; }

// The host work holds copies of the parts (q, k, v at most), not the caller's pointers to them.
constexpr std::size_t kMaxParts = 3;
struct Parts {
  std::array<Tensor, kMaxParts> t;
  std::size_t n = 0;
};
template <class P>
Parts copy_parts(std::span<P* const> parts) {
  GPPF_CHECK(parts.size() <= kMaxParts, "heads: ", parts.size(), " parts, at most ", kMaxParts);
  Parts out;
  for (P* p : parts) out.t[out.n++] = *p;
  return out;
}

void to_heads(const HeadsShape& g, const Tensor& tokens, std::span<Tensor* const> parts, const Stream& s) {
  if (launch_on_cuda(tokens.device()))
    cuda::tokens_to_heads(g, tokens, parts, device_stream(s, tokens));
  else
    runtime::host_launch([g, tokens, ps = copy_parts(parts)]() mutable {
      std::array<Tensor*, kMaxParts> ptrs{};
      for (std::size_t i = 0; i < ps.n; ++i) ptrs[i] = &ps.t[i];
      host::tokens_to_heads(g, tokens, std::span<Tensor* const>(ptrs.data(), ps.n));
    });
}

void to_tokens(const HeadsShape& g, std::span<const Tensor* const> parts, Tensor& tokens, const Stream& s) {
  if (launch_on_cuda(tokens.device()))
    cuda::heads_to_tokens(g, parts, tokens, device_stream(s, tokens));
  else
    runtime::host_launch([g, ps = copy_parts(parts), tokens]() mutable {
      std::array<const Tensor*, kMaxParts> ptrs{};
      for (std::size_t i = 0; i < ps.n; ++i) ptrs[i] = &ps.t[i];
      host::heads_to_tokens(g, std::span<const Tensor* const>(ptrs.data(), ps.n), tokens);
    });
}

}  // namespace

void split_heads(const Tensor& qkv, int heads, Tensor& q, Tensor& k, Tensor& v, const Stream& s) {
  constexpr const char* op = "split_heads";
  check_input(op, "qkv", qkv, 3, "[N, T, 3 * H * Dh]");
  const HeadsShape g = tokens_shape(op, "qkv", qkv, 3, heads);
  check_operand(op, "q", q, heads_layout(g), qkv);
  check_operand(op, "k", k, heads_layout(g), qkv);
  check_operand(op, "v", v, heads_layout(g), qkv);
  check_disjoint(op, {{"q", &q}, {"k", &k}, {"v", &v}}, {{"qkv", &qkv}});
  if (qkv.numel() == 0) return;
  Tensor* const parts[] = {&q, &k, &v};
  to_heads(g, qkv, parts, s);
}

void split_heads_bwd(const Tensor& dq, const Tensor& dk, const Tensor& dv, Tensor& dqkv, const Stream& s) {
  constexpr const char* op = "split_heads_bwd";
  check_input(op, "dq", dq, 4, "[N, H, T, Dh]");
  check_operand(op, "dk", dk, dq.shape(), dq);
  check_operand(op, "dv", dv, dq.shape(), dq);
  const HeadsShape g = heads_shape(dq, 3);
  check_operand(op, "dqkv", dqkv, tokens_layout(g), dq);
  check_disjoint(op, {{"dqkv", &dqkv}}, {{"dq", &dq}, {"dk", &dk}, {"dv", &dv}});
  if (dqkv.numel() == 0) return;
  const Tensor* const parts[] = {&dq, &dk, &dv};
  to_tokens(g, parts, dqkv, s);
}

void merge_heads(const Tensor& x, Tensor& y, const Stream& s) {
  constexpr const char* op = "merge_heads";
  check_input(op, "x", x, 4, "[N, H, T, Dh]");
  const HeadsShape g = heads_shape(x, 1);
  check_operand(op, "y", y, tokens_layout(g), x);
  check_disjoint(op, {{"y", &y}}, {{"x", &x}});
  if (y.numel() == 0) return;
  const Tensor* const parts[] = {&x};
  to_tokens(g, parts, y, s);
}

void merge_heads_bwd(const Tensor& dy, int heads, Tensor& dx, const Stream& s) {
  constexpr const char* op = "merge_heads_bwd";
  check_input(op, "dy", dy, 3, "[N, T, H * Dh]");
  const HeadsShape g = tokens_shape(op, "dy", dy, 1, heads);
  check_operand(op, "dx", dx, heads_layout(g), dy);
  check_disjoint(op, {{"dx", &dx}}, {{"dy", &dy}});
  if (dx.numel() == 0) return;
  Tensor* const parts[] = {&dx};
  to_heads(g, dy, parts, s);
}

}  // namespace gppf::kernels
