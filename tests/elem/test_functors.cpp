// The CUDA backend launches functors that the host backend does not use (the host has faster
// per-pixel / per-row loops). They are plain __host__ __device__ code, so they run here too: each is
// checked on the host against the reference, in f32 and in bf16 storage, before any GPU sees it.
#include <gtest/gtest.h>

#include "kernels/cast.hpp"
#include "kernels/functors/concat.hpp"
#include "kernels/functors/elementwise.hpp"
#include "kernels/functors/resample.hpp"
#include "kernels/ref/concat.hpp"
#include "kernels/ref/elementwise.hpp"
#include "kernels/ref/resample.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using Vec = std::vector<double>;

// Random values exactly representable in T, as a tensor of T and as doubles.
template <class T>
std::pair<Tensor, Vec> input(const Shape& shape, std::uint64_t seed) {
  const Tensor x = test::random_tensor(shape, seed);
  Tensor t = kernels::cast(x, dtype_of<T>::value);
  return {t, test::to_double(t)};
}
template <class T>
double tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-2;
}

template <class T>
void check_upsample() {
  using namespace kernels;
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{2, 5, 7, 3}, {2, 10, 14, 3}}, {{1, 7, 5, 4}, {1, 15, 11, 4}}, {{1, 9, 13, 2}, {1, 4, 6, 2}}};
  for (const bool bilinear : {false, true})
    for (const auto& [xs, ys] : cases) {
      const UpsampleParams p{bilinear ? UpsampleMode::Bilinear : UpsampleMode::Nearest};
      const ResampleGeom g{xs[0], xs[1], xs[2], ys[1], ys[2], xs[3]};
      auto [x, vx] = input<T>(xs, 1);
      Tensor y = Tensor::empty(ys, dtype_of<T>::value);
      parallel_for_host(y.numel(), UpsampleFwdFunctor<T>{data_ptr<T>(x), data_ptr<T>(y), g, bilinear});
      EXPECT_LT(test::max_rel_error(y, ref::upsample_fwd(p, xs, vx, ys)), tol<T>()) << bilinear << shape_str(ys);

      auto [dy, vdy] = input<T>(ys, 2);
      auto [dx, old] = input<T>(xs, 3);
      const Vec expect = ref::upsample_bwd(p, xs, ys, vdy);
      parallel_for_host(dx.numel(), UpsampleBwdFunctor<T>{data_ptr<T>(dy), data_ptr<T>(dx), g, bilinear, true});
      EXPECT_LT(test::max_rel_error(dx, ref::add(old, expect)), tol<T>()) << bilinear << shape_str(xs);
      parallel_for_host(dx.numel(), UpsampleBwdFunctor<T>{data_ptr<T>(dy), data_ptr<T>(dx), g, bilinear, false});
      EXPECT_LT(test::max_rel_error(dx, expect), tol<T>()) << bilinear << shape_str(xs);
    }
}

TEST(Functors, UpsampleF32) { check_upsample<float>(); }
TEST(Functors, UpsampleBf16) { check_upsample<bf16>(); }

template <class T>
void check_concat() {
  using namespace kernels;
  const std::vector<std::int64_t> channels = {3, 0, 8, 1};
  const std::int64_t rows = 37, cols = 12;
  std::vector<Tensor> xs;
  std::vector<Vec> vs;
  for (std::size_t i = 0; i < channels.size(); ++i) {
    auto [x, v] = input<T>({rows, channels[i]}, 10 + i);
    xs.push_back(x);
    vs.push_back(v);
  }
  Tensor y = Tensor::empty({rows, cols}, dtype_of<T>::value);
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const ChannelSlice sl{rows, channels[i], cols, offset};
    if (channels[i] > 0)
      parallel_for_host(xs[i].numel(), ConcatSliceFunctor<T>{data_ptr<T>(xs[i]), data_ptr<T>(y), sl});
    offset += channels[i];
  }
  EXPECT_EQ(test::max_rel_error(y, ref::concat_channels(vs, channels, rows)), 0.0);
  offset = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const ChannelSlice sl{rows, channels[i], cols, offset};
    if (channels[i] > 0)
      parallel_for_host(xs[i].numel(), SplitSliceFunctor<T>{data_ptr<T>(y), data_ptr<T>(xs[i]), sl, true});
    EXPECT_LT(test::max_rel_error(xs[i], ref::add(vs[i], vs[i])), tol<T>()) << i;
    offset += channels[i];
  }
}

TEST(Functors, ConcatSplitF32) { check_concat<float>(); }
TEST(Functors, ConcatSplitBf16) { check_concat<bf16>(); }

template <class T>
void check_pointwise() {
  using namespace kernels;
  const std::int64_t n = 5003;
  auto [a, va] = input<T>({n}, 20);
  auto [b, vb] = input<T>({n}, 21);
  Tensor y = Tensor::empty({n}, dtype_of<T>::value);
  parallel_for_host(n, AddFunctor<T, true>{data_ptr<T>(a), data_ptr<T>(b), data_ptr<T>(y)});
  EXPECT_LT(test::max_rel_error(y, ref::add_relu_fwd(va, vb)), tol<T>());
  // alpha read through a pointer (the routing gate), x of T into an f32 y
  const float alpha = -0.375f;
  Tensor yf = kernels::cast(b, DType::F32);
  parallel_for_host(n, AxpbyFunctor<T, float, AlphaPointer, true>{{&alpha}, data_ptr<T>(a), 2.0f, data_ptr<float>(yf)});
  EXPECT_LT(test::max_rel_error(yf, ref::axpby(alpha, va, 2.0, vb)), 1e-6);
  parallel_for_host(n, ReluBwdFunctor<T, true>{data_ptr<T>(a), data_ptr<T>(b), data_ptr<T>(y)});
  EXPECT_LT(test::max_rel_error(y, ref::add(ref::add_relu_fwd(va, vb), ref::relu_bwd(va, vb))), tol<T>());
  auto [bias, vbias] = input<T>({7}, 22);
  Tensor m = Tensor::empty({3, 7}, DType::F32);
  parallel_for_host(21, BroadcastRowsFunctor<T, float>{data_ptr<T>(bias), data_ptr<float>(m), 7});
  Vec expect;
  for (int r = 0; r < 3; ++r) expect.insert(expect.end(), vbias.begin(), vbias.end());
  EXPECT_EQ(test::max_rel_error(m, expect), 0.0);
}

TEST(Functors, PointwiseF32) { check_pointwise<float>(); }
TEST(Functors, PointwiseBf16) { check_pointwise<bf16>(); }

}  // namespace
}  // namespace gppf
