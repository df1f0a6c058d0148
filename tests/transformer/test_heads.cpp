// The head layout ops (kernels/heads.hpp) on the host: by hand, against the reference bit for bit,
// backward as the adjoint and the inverse of forward, launches, and bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kernels/cast.hpp"
#include "kernels/heads.hpp"
#include "kernels/ref/heads.hpp"
#include "tests/common/util.hpp"
#include "tests/transformer/heads_cases.hpp"
#include "tests/transformer/helpers.hpp"

namespace gppf {
namespace {

using test::HeadsCase;
using Vec = std::vector<double>;

Tensor random_as(const Shape& shape, std::uint64_t seed, DType dtype) {
  return kernels::cast(test::random_tensor(shape, seed), dtype);
}

// Multiples of 1/16 in [-4, 4]: exact in bf16, and their products and sums exact in double, so that
// inner products over different orders of the same terms are equal to the last bit.
Tensor dyadic(const Shape& shape, std::uint64_t seed, DType dtype) {
  Vec v = test::random_vector(static_cast<std::size_t>(shape_numel(shape)), seed, -4.0, 4.0);
  for (double& x : v) x = std::round(x * 16.0) / 16.0;
  return kernels::cast(Tensor::from_vector(shape, test::to_float(v)), dtype);
}

// split_heads's outputs, allocated.
struct Qkv {
  Tensor q, k, v;
};
Qkv split(const Tensor& qkv, const HeadsCase& c) {
  Qkv o{Tensor::empty(c.per_head(), qkv.dtype()), Tensor::empty(c.per_head(), qkv.dtype()),
        Tensor::empty(c.per_head(), qkv.dtype())};
  kernels::split_heads(qkv, static_cast<int>(c.heads), o.q, o.k, o.v);
  return o;
}
Tensor split_bwd(const Qkv& d, const HeadsCase& c) {
  Tensor dqkv = Tensor::empty(c.qkv(), d.q.dtype());
  kernels::split_heads_bwd(d.q, d.k, d.v, dqkv);
  return dqkv;
}
Tensor merge(const Tensor& x, const HeadsCase& c) {
  Tensor y = Tensor::empty(c.tokens(), x.dtype());
  kernels::merge_heads(x, y);
  return y;
}
Tensor merge_bwd(const Tensor& dy, const HeadsCase& c) {
  Tensor dx = Tensor::empty(c.per_head(), dy.dtype());
  kernels::merge_heads_bwd(dy, static_cast<int>(c.heads), dx);
  return dx;
}

TEST(HeadsHost, SplitByHand) {
  // qkv [1, 2, 3 * 2 * 1]: token i holds q(h0) q(h1) k(h0) k(h1) v(h0) v(h1); q [1, 2, 2, 1] is
  // head 0's tokens, then head 1's.
  const HeadsCase c{1, 2, 2, 1};
  const Tensor qkv = Tensor::from_vector(c.qkv(), {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  const Qkv o = split(qkv, c);
  EXPECT_EQ(o.q.to_float_vector(), (std::vector<float>{0, 6, 1, 7}));
  EXPECT_EQ(o.k.to_float_vector(), (std::vector<float>{2, 8, 3, 9}));
  EXPECT_EQ(o.v.to_float_vector(), (std::vector<float>{4, 10, 5, 11}));
  const auto parts = kernels::ref::tokens_to_heads(c.layout(3), test::to_double(qkv));
  EXPECT_EQ(parts[0], test::to_double(o.q));
  EXPECT_EQ(parts[2], test::to_double(o.v));
  // merge_heads puts them back as tokens: y[i] = q(h0) q(h1) of token i.
  EXPECT_EQ(merge(o.q, c).to_float_vector(), (std::vector<float>{0, 1, 6, 7}));
}

TEST(HeadsRef, HeadsToTokensInvertsTokensToHeads) {
  for (const std::int64_t parts : {1, 3}) {
    const kernels::HeadsShape g{2, 3, parts, 4, 5};
    const Vec x = test::random_vector(static_cast<std::size_t>(2 * 3 * parts * 4 * 5), 7);
    EXPECT_EQ(kernels::ref::heads_to_tokens(g, kernels::ref::tokens_to_heads(g, x)), x);
  }
}

// Small, odd, one value per head, a ViT-S/16 block's 197 tokens (above the OpenMP threshold).
const HeadsCase kCases[] = {{2, 5, 3, 4}, {1, 1, 1, 1}, {2, 7, 12, 3}, {3, 197, 6, 64}};

// f(case, dtype, seed) for every case in both dtypes, seeds 10 apart, under a trace naming them.
template <class F>
void for_each_case(std::uint64_t seed, const F& f) {
  for (DType dtype : {DType::F32, DType::BF16})
    for (const HeadsCase& c : kCases) {
      SCOPED_TRACE(c.str() + " " + dtype_name(dtype));
      f(c, dtype, seed);
      seed += 10;
    }
}

TEST(SplitHeadsHost, MatchesReferenceBitExact) {
  for_each_case(100, [](const HeadsCase& c, DType dtype, std::uint64_t seed) {
    const Tensor qkv = random_as(c.qkv(), seed, dtype);
    const Qkv o = split(qkv, c);
    const auto ref = kernels::ref::tokens_to_heads(c.layout(3), test::to_double(qkv));
    EXPECT_EQ(test::to_double(o.q), ref[0]);
    EXPECT_EQ(test::to_double(o.k), ref[1]);
    EXPECT_EQ(test::to_double(o.v), ref[2]);
    const Qkv d{random_as(c.per_head(), seed + 1, dtype), random_as(c.per_head(), seed + 2, dtype),
                random_as(c.per_head(), seed + 3, dtype)};
    EXPECT_EQ(
        test::to_double(split_bwd(d, c)),
        kernels::ref::heads_to_tokens(c.layout(3), {test::to_double(d.q), test::to_double(d.k), test::to_double(d.v)}));
  });
}

TEST(MergeHeadsHost, MatchesReferenceBitExact) {
  for_each_case(200, [](const HeadsCase& c, DType dtype, std::uint64_t seed) {
    const Tensor x = random_as(c.per_head(), seed, dtype);
    EXPECT_EQ(test::to_double(merge(x, c)), kernels::ref::heads_to_tokens(c.layout(1), {test::to_double(x)}));
    const Tensor dy = random_as(c.tokens(), seed + 1, dtype);
    EXPECT_EQ(test::to_double(merge_bwd(dy, c)), kernels::ref::tokens_to_heads(c.layout(1), test::to_double(dy))[0]);
  });
}

// <split(x), y> == <x, split_bwd(y)>, and the same for merge, exactly (dyadic values).
TEST(HeadsHost, BackwardIsTheAdjoint) {
  for_each_case(300, [](const HeadsCase& c, DType dtype, std::uint64_t seed) {
    const Tensor x = dyadic(c.qkv(), seed, dtype);
    const Qkv y{dyadic(c.per_head(), seed + 1, dtype), dyadic(c.per_head(), seed + 2, dtype),
                dyadic(c.per_head(), seed + 3, dtype)};
    const Qkv sx = split(x, c);
    const double lhs = test::dot(test::to_double(sx.q), test::to_double(y.q)) +
                       test::dot(test::to_double(sx.k), test::to_double(y.k)) +
                       test::dot(test::to_double(sx.v), test::to_double(y.v));
    EXPECT_EQ(lhs, test::dot(test::to_double(x), test::to_double(split_bwd(y, c))));
    EXPECT_NE(lhs, 0.0);

    const Tensor hx = dyadic(c.per_head(), seed + 4, dtype), ty = dyadic(c.tokens(), seed + 5, dtype);
    EXPECT_EQ(test::dot(test::to_double(merge(hx, c)), test::to_double(ty)),
              test::dot(test::to_double(hx), test::to_double(merge_bwd(ty, c))));
  });
}

// A permutation's adjoint is its inverse: backward after forward (and merge after merge_heads_bwd)
// gives back every bit, NaN payloads included.
TEST(HeadsHost, BackwardInvertsForwardBitForBit) {
  for_each_case(400, [](const HeadsCase& c, DType dtype, std::uint64_t seed) {
    const Tensor qkv = test::random_bits(c.qkv(), dtype, seed);
    EXPECT_EQ(test::bytes_of(split_bwd(split(qkv, c), c)), test::bytes_of(qkv));
    const Tensor x = test::random_bits(c.per_head(), dtype, seed + 1);
    EXPECT_EQ(test::bytes_of(merge_bwd(merge(x, c), c)), test::bytes_of(x));
    const Tensor y = test::random_bits(c.tokens(), dtype, seed + 2);
    EXPECT_EQ(test::bytes_of(merge(merge_bwd(y, c), c)), test::bytes_of(y));
  });
}

TEST(HeadsHost, ViewsAtAnOffset) {
  // Rows 1.. of larger buffers (Tensor::narrow0): an odd offset in bf16 values.
  const HeadsCase c{2, 3, 3, 3};
  const Tensor big = random_as({3, c.t, 3 * c.heads * c.dh}, 1, DType::BF16);
  const Tensor qkv = big.narrow0(1, 2);
  Tensor qs = Tensor::empty({3, c.heads, c.t, c.dh}, DType::BF16);
  Tensor q = qs.narrow0(1, 2), k = Tensor::empty(c.per_head(), DType::BF16),
         v = Tensor::empty(c.per_head(), DType::BF16);
  kernels::split_heads(qkv, static_cast<int>(c.heads), q, k, v);
  const auto ref = kernels::ref::tokens_to_heads(c.layout(3), test::to_double(qkv));
  EXPECT_EQ(test::to_double(q), ref[0]);
  EXPECT_EQ(test::to_double(v), ref[2]);
}

TEST(HeadsHost, CountsOneLaunchPerCall) {
  const HeadsCase c{2, 4, 2, 8};
  const Tensor qkv = test::random_tensor(c.qkv(), 1), x = test::random_tensor(c.per_head(), 2);
  Tensor q = Tensor::empty(c.per_head(), DType::F32), k = Tensor::empty(c.per_head(), DType::F32),
         v = Tensor::empty(c.per_head(), DType::F32), dqkv = Tensor::empty(c.qkv(), DType::F32),
         y = Tensor::empty(c.tokens(), DType::F32), dx = Tensor::empty(c.per_head(), DType::F32);
  EXPECT_EQ(test::launches_of([&] { kernels::split_heads(qkv, 2, q, k, v); }), 1);
  EXPECT_EQ(test::launches_of([&] { kernels::split_heads_bwd(q, k, v, dqkv); }), 1);
  EXPECT_EQ(test::launches_of([&] { kernels::merge_heads(x, y); }), 1);
  EXPECT_EQ(test::launches_of([&] { kernels::merge_heads_bwd(y, 2, dx); }), 1);
  // Nothing to move, nothing launched.
  const HeadsCase e{0, 4, 2, 8};
  const Tensor qkv0 = Tensor::empty(e.qkv(), DType::F32);
  Tensor q0 = Tensor::empty(e.per_head(), DType::F32), k0 = Tensor::empty(e.per_head(), DType::F32),
         v0 = Tensor::empty(e.per_head(), DType::F32), y0 = Tensor::empty(e.tokens(), DType::F32);
  EXPECT_EQ(test::launches_of([&] { kernels::split_heads(qkv0, 2, q0, k0, v0); }), 0);
  EXPECT_EQ(test::launches_of([&] { kernels::merge_heads(q0, y0); }), 0);
}

TEST(HeadsHost, RejectsBadArguments) {
  const HeadsCase c{2, 3, 2, 4};
  const Tensor qkv = test::random_tensor(c.qkv(), 1);
  Tensor q = Tensor::empty(c.per_head(), DType::F32), k = Tensor::empty(c.per_head(), DType::F32),
         v = Tensor::empty(c.per_head(), DType::F32);
  const Tensor qkv2 = test::random_tensor({6, 24}, 2);
  test::expect_error_names([&] { kernels::split_heads(qkv2, 2, q, k, v); }, "split_heads", "qkv");
  const Tensor qkv_not3 = test::random_tensor({2, 3, 25}, 3);
  test::expect_error_names([&] { kernels::split_heads(qkv_not3, 2, q, k, v); }, "split_heads", "multiple of 3");
  test::expect_error_names([&] { kernels::split_heads(qkv, 3, q, k, v); }, "split_heads", "not divisible by heads = 3");
  test::expect_error_names([&] { kernels::split_heads(qkv, 0, q, k, v); }, "split_heads", "heads");
  Tensor bad_q = Tensor::empty({2, 3, 2, 4}, DType::F32);
  test::expect_error_names([&] { kernels::split_heads(qkv, 2, bad_q, k, v); }, "split_heads", "q");
  Tensor k16 = Tensor::empty(c.per_head(), DType::BF16);
  test::expect_error_names([&] { kernels::split_heads(qkv, 2, q, k16, v); }, "split_heads", "k expected dtype");
  Tensor undefined;
  test::expect_error_names([&] { kernels::split_heads(qkv, 2, q, k, undefined); }, "split_heads", "v is undefined");
  const Tensor qkv_f16 = Tensor::zeros(c.qkv(), DType::F16);
  test::expect_error_names([&] { kernels::split_heads(qkv_f16, 2, q, k, v); }, "split_heads", "f32 or bf16");
  test::expect_error_names([&] { kernels::split_heads(qkv, 2, q, q, v); }, "split_heads", "outputs q");
  // q over the first values of qkv: the permutation cannot run in place.
  const Tensor flat = test::random_tensor({shape_numel(c.qkv())}, 4);
  Tensor q_in = flat.narrow0(0, shape_numel(c.per_head())).reshape(c.per_head());
  test::expect_error_names([&] { kernels::split_heads(flat.reshape(c.qkv()), 2, q_in, k, v); }, "split_heads",
                           "overlaps input qkv");

  Tensor dqkv = Tensor::empty(c.qkv(), DType::F32);
  const Tensor dk_bad = test::random_tensor({2, 2, 4, 4}, 5);
  test::expect_error_names([&] { kernels::split_heads_bwd(q, dk_bad, v, dqkv); }, "split_heads_bwd", "dk");
  Tensor dqkv_bad = Tensor::empty({2, 3, 8}, DType::F32);
  test::expect_error_names([&] { kernels::split_heads_bwd(q, k, v, dqkv_bad); }, "split_heads_bwd", "dqkv");
  test::expect_error_names([&] { kernels::split_heads_bwd(qkv, k, v, dqkv); }, "split_heads_bwd", "dq");

  const Tensor x = test::random_tensor(c.per_head(), 6);
  Tensor y = Tensor::empty(c.tokens(), DType::F32), y_bad = Tensor::empty({2, 2, 12}, DType::F32);
  test::expect_error_names([&] { kernels::merge_heads(x, y_bad); }, "merge_heads", "y");
  test::expect_error_names([&] { kernels::merge_heads(y, y_bad); }, "merge_heads", "x");
  Tensor dx = Tensor::empty(c.per_head(), DType::F32), dx_bad = Tensor::empty({2, 4, 3, 2}, DType::F32);
  test::expect_error_names([&] { kernels::merge_heads_bwd(y, 3, dx); }, "merge_heads_bwd", "dy");
  test::expect_error_names([&] { kernels::merge_heads_bwd(y, 2, dx_bad); }, "merge_heads_bwd", "dx");
  test::expect_error_names([&] { kernels::merge_heads_bwd(y, -1, dx); }, "merge_heads_bwd", "heads");
}

}  // namespace
}  // namespace gppf
