#pragma once
// The element-wise halves of batch norm, written once for the host (OpenMP) and CUDA: the per-channel
// reductions are backend-specific, after which every element is an affine map of its inputs with
// per-channel coefficients. T is float or gppf::bf16 (activations); coefficients are f32.
#include <cstdint>

#include "core/dtype.hpp"
#include "kernels/parallel_for.hpp"

namespace gppf::kernels {

// Activation loads and stores (f32 math on bf16 storage); a namespace of their own so that other
// families' helpers cannot collide with them.
namespace normpool {
GPPF_HD GPPF_INLINE float load(float v) { return v; }
GPPF_HD GPPF_INLINE float load(bf16 v) { return load_bf16(v.bits); }
template <class T>
GPPF_HD GPPF_INLINE T store(float v);
template <>
GPPF_HD GPPF_INLINE float store<float>(float v) {
  return v;
}
template <>
GPPF_HD GPPF_INLINE bf16 store<bf16>(float v) {
  bf16 b;
  b.bits = store_bf16(v);
  return b;
}

// Elements of T per 16 bytes: one 128-bit load or store (LDG.128 / STG.128 on CUDA).
template <class T>
inline constexpr int kVector = static_cast<int>(16 / sizeof(T));

// V consecutive elements moved as one aligned block, so that nvcc emits 128-bit accesses.
template <class T, int V>
struct alignas(16) Chunk {
  T v[V];
};
template <int V, class T>
GPPF_HD GPPF_INLINE Chunk<T, V> load_chunk(const T* p) {
  return *reinterpret_cast<const Chunk<T, V>*>(p);
}
template <int V, class T>
GPPF_HD GPPF_INLINE void store_chunk(T* p, const Chunk<T, V>& c) {
  *reinterpret_cast<Chunk<T, V>*>(p) = c;
}

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }
template <class... P>
bool all_aligned16(const P*... p) {
  return (aligned16(p) && ...);
}
}  // namespace normpool

// y = (x - mean[c]) * scale[c] + beta[c], then max(y, 0) when relu. Centring first keeps f32 exact
// enough when |mean| >> std.
// kRelu is a template argument so that the branch-free loop vectorises on the host.
template <class T, bool kRelu>
struct BatchNormApplyFunctor {
  const T* x;
  T* y;
  const float* mean;
  const float* scale;
  const float* beta;
  std::int64_t channels;  // the coefficients' period: C, or a multiple of C with tiled coefficients
  // One element; the vector pass calls this too, so both round identically.
  GPPF_HD GPPF_INLINE static T map(T xv, float m, float s, float b) {
    float v = (normpool::load(xv) - m) * s + b;
    if constexpr (kRelu) v = v > 0.0f ? v : 0.0f;
    return normpool::store<T>(v);
  }
  GPPF_HD GPPF_INLINE void at(std::int64_t i, std::int64_t c) const { y[i] = map(x[i], mean[c], scale[c], beta[c]); }
  GPPF_HD void operator()(std::int64_t i) const { at(i, i % channels); }
};

// dx = a[c] * (g - b[c] - (x - mean[c]) * k[c]), g = dy masked by y > 0 when relu: the standard
// gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)) with a = gamma * invstd, b = mean(g),
// k = invstd^2 * mean(g * (x - mean)).
template <class T, bool kRelu>
struct BatchNormBwdDataFunctor {
  const T* x;
  const T* y;  // read only with kRelu
  const T* dy;
  T* dx;
  const float* mean;
  const float* a;
  const float* b;
  const float* k;
  std::int64_t channels;  // as in BatchNormApplyFunctor
  // One element (yv ignored without kRelu); shared with the vector pass as in BatchNormApplyFunctor.
  GPPF_HD GPPF_INLINE static T map(T xv, T yv, T dyv, float m, float ca, float cb, float ck) {
    float g = normpool::load(dyv);
    if constexpr (kRelu) g = normpool::load(yv) > 0.0f ? g : 0.0f;
    return normpool::store<T>(ca * (g - cb - (normpool::load(xv) - m) * ck));
  }
  GPPF_HD GPPF_INLINE void at(std::int64_t i, std::int64_t c) const {
    dx[i] = map(x[i], kRelu ? y[i] : T{}, dy[i], mean[c], a[c], b[c], k[c]);
  }
  GPPF_HD void operator()(std::int64_t i) const { at(i, i % channels); }
};

// The passes below (CUDA's launch form; the host runs at() in its own row loops) take an index type
// I: std::uint32_t below 2^31 elements, so that the channel modulo is one 32-bit operation instead of
// a 64-bit sequence on the GPU (unsigned: a grid-stride step past the end cannot overflow), and
// std::int64_t beyond.

// A scalar functor F (either of the above) over elements, with its channel index computed in I.
template <class F, class I>
struct BatchNormScalarPass {
  F f;
  I channels;
  GPPF_HD GPPF_INLINE void operator()(I i) const { f.at(i, i % channels); }
};

// Elements [v * kV, v * kV + kV) per call, as 16-byte chunks. Valid when kV divides the period and
// every pointer is 16-byte aligned (vectorisable()): the chunk then lies within one period, so the
// channel is computed once and the coefficients are loaded as chunks too.
template <class T, bool kRelu, class I>
struct BatchNormApplyVectorPass {
  static constexpr int kV = normpool::kVector<T>;
  BatchNormApplyFunctor<T, kRelu> f;
  I channels;
  static bool vectorisable(const BatchNormApplyFunctor<T, kRelu>& s) {
    return s.channels % kV == 0 && normpool::all_aligned16(s.x, s.y, s.mean, s.scale, s.beta);
  }
  GPPF_HD GPPF_INLINE void operator()(I v) const {
    const I i = v * kV, c = i % channels;
    const auto xv = normpool::load_chunk<kV>(f.x + i);
    const auto m = normpool::load_chunk<kV>(f.mean + c), s = normpool::load_chunk<kV>(f.scale + c),
               b = normpool::load_chunk<kV>(f.beta + c);
    normpool::Chunk<T, kV> out;
#pragma unroll
    for (int j = 0; j < kV; ++j) out.v[j] = f.map(xv.v[j], m.v[j], s.v[j], b.v[j]);
    normpool::store_chunk<kV>(f.y + i, out);
  }
};

template <class T, bool kRelu, class I>
struct BatchNormBwdDataVectorPass {
  static constexpr int kV = normpool::kVector<T>;
  BatchNormBwdDataFunctor<T, kRelu> f;
  I channels;
  static bool vectorisable(const BatchNormBwdDataFunctor<T, kRelu>& s) {
    return s.channels % kV == 0 && normpool::all_aligned16(s.x, s.dy, s.dx, s.mean, s.a, s.b, s.k) &&
           (!kRelu || normpool::aligned16(s.y));
  }
  GPPF_HD GPPF_INLINE void operator()(I v) const {
    const I i = v * kV, c = i % channels;
    const auto xv = normpool::load_chunk<kV>(f.x + i), dyv = normpool::load_chunk<kV>(f.dy + i);
    normpool::Chunk<T, kV> yv{};
    if constexpr (kRelu) yv = normpool::load_chunk<kV>(f.y + i);
    const auto m = normpool::load_chunk<kV>(f.mean + c), ca = normpool::load_chunk<kV>(f.a + c),
               cb = normpool::load_chunk<kV>(f.b + c), ck = normpool::load_chunk<kV>(f.k + c);
    normpool::Chunk<T, kV> out;
#pragma unroll
    for (int j = 0; j < kV; ++j) out.v[j] = f.map(xv.v[j], yv.v[j], dyv.v[j], m.v[j], ca.v[j], cb.v[j], ck.v[j]);
    normpool::store_chunk<kV>(f.dx + i, out);
  }
};

template <class F, class I>
struct BatchNormVectorPassOf;
template <class T, bool kRelu, class I>
struct BatchNormVectorPassOf<BatchNormApplyFunctor<T, kRelu>, I> {
  using type = BatchNormApplyVectorPass<T, kRelu, I>;
};
template <class T, bool kRelu, class I>
struct BatchNormVectorPassOf<BatchNormBwdDataFunctor<T, kRelu>, I> {
  using type = BatchNormBwdDataVectorPass<T, kRelu, I>;
};

enum class BatchNormPass { Scalar32, Scalar64, Vector32, Vector64 };

// Runs the scalar functor f over its n elements as the fastest pass that is valid for it, through
// launch(count, pass), which must call pass(i) for every i in [0, count) with count's type (a
// kernel launch on CUDA, a loop on the host; count may be 0). Returns the pass taken.
template <class F, class Launch>
BatchNormPass run_batchnorm_pass(std::int64_t n, const F& f, const Launch& launch) {
  using Vector64 = typename BatchNormVectorPassOf<F, std::int64_t>::type;
  using Vector32 = typename BatchNormVectorPassOf<F, std::uint32_t>::type;
  constexpr int kV = Vector64::kV;
  const bool narrow = n < (std::int64_t{1} << 31) && f.channels < (std::int64_t{1} << 31);
  if (n % kV == 0 && Vector64::vectorisable(f)) {
    if (narrow) {
      launch(static_cast<std::uint32_t>(n / kV), Vector32{f, static_cast<std::uint32_t>(f.channels)});
      return BatchNormPass::Vector32;
    }
    launch(n / kV, Vector64{f, f.channels});
    return BatchNormPass::Vector64;
  }
  if (narrow) {
    launch(static_cast<std::uint32_t>(n),
           BatchNormScalarPass<F, std::uint32_t>{f, static_cast<std::uint32_t>(f.channels)});
    return BatchNormPass::Scalar32;
  }
  launch(n, BatchNormScalarPass<F, std::int64_t>{f, f.channels});
  return BatchNormPass::Scalar64;
}

}  // namespace gppf::kernels
