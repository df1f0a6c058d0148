// CUDA head layout ops (kernels/heads.hpp) against the host backend (itself tested against
// kernels/ref): bit for bit, on random bit patterns (NaN payloads included), for every word width the
// kernel picks (16 bytes for ViT's Dh = 64 down to 2 for odd bf16 heads and odd view offsets).
#include <gtest/gtest.h>

#include "core/cuda_runtime.hpp"
#include "kernels/heads.hpp"
#include "tests/common/util.hpp"
#include "tests/transformer/heads_cases.hpp"
#include "tests/transformer/helpers.hpp"

namespace gppf {
namespace {

using test::HeadsCase;

const Device kGpu = Device::cuda(0);

// The four ops on one device: the outputs of split_heads, split_heads_bwd (of q, k, v), merge_heads
// and merge_heads_bwd (of its output), in that order.
std::vector<Tensor> run_all(const HeadsCase& c, const Tensor& qkv, const Tensor& x, const Stream& s) {
  const Device dev = qkv.device();
  const DType dt = qkv.dtype();
  const int h = static_cast<int>(c.heads);
  Tensor q = Tensor::empty(c.per_head(), dt, dev), k = Tensor::empty(c.per_head(), dt, dev),
         v = Tensor::empty(c.per_head(), dt, dev), dqkv = Tensor::empty(c.qkv(), dt, dev),
         y = Tensor::empty(c.tokens(), dt, dev), dx = Tensor::empty(c.per_head(), dt, dev);
  kernels::split_heads(qkv, h, q, k, v, s);
  kernels::split_heads_bwd(v, q, k, dqkv, s);  // rotated, so that a part mixed up shows
  kernels::merge_heads(x, y, s);
  kernels::merge_heads_bwd(y, h, dx, s);
  if (dev.is_cuda()) cuda::synchronize(s);
  return {q, k, v, dqkv, y, dx};
}

void check_parity(const HeadsCase& c, DType dtype, std::uint64_t seed, const Stream& s) {
  SCOPED_TRACE(c.str() + " " + dtype_name(dtype));
  const Tensor qkv = test::random_bits(c.qkv(), dtype, seed), x = test::random_bits(c.per_head(), dtype, seed + 1);
  const auto host = run_all(c, qkv, x, Stream::host());
  const auto dev = run_all(c, qkv.to(kGpu), x.to(kGpu), s);
  const char* names[] = {"q", "k", "v", "dqkv", "y", "dx"};
  for (std::size_t i = 0; i < host.size(); ++i) EXPECT_EQ(test::bytes_of(dev[i]), test::bytes_of(host[i])) << names[i];
}

TEST(HeadsCuda, MatchesHostBitExact) {
  GPPF_REQUIRE_GPU();
  std::uint64_t seed = 1;
  const Stream legacy{kGpu, nullptr};
  for (DType dtype : {DType::F32, DType::BF16})
    // Head rows of 256/128 bytes (16-byte words), 8 bytes, 12 or 6, 4 or 2; ViT-B/16's block.
    for (const HeadsCase& c : {HeadsCase{2, 5, 3, 64}, HeadsCase{2, 5, 3, 2}, HeadsCase{2, 7, 12, 3},
                               HeadsCase{1, 1, 1, 1}, HeadsCase{8, 197, 12, 64}})
      check_parity(c, dtype, seed += 10, legacy);
}

TEST(HeadsCuda, SideStream) {
  GPPF_REQUIRE_GPU();
  const Stream s = cuda::create_stream(0);
  check_parity({4, 50, 6, 32}, DType::BF16, 100, s);
  cuda::destroy_stream(s);
}

// A bf16 tensor that starts one value past its allocation: 2 bytes off every wider boundary.
Tensor unaligned(const Shape& shape) {
  const std::int64_t n = shape_numel(shape);
  return Tensor::empty({n + 1}, DType::BF16, kGpu).narrow0(1, n).reshape(shape);
}

TEST(HeadsCuda, UnalignedViews) {
  GPPF_REQUIRE_GPU();
  // Rows of 16 values would allow 16-byte words; the pointers allow only 2-byte ones.
  const HeadsCase c{2, 3, 3, 16};
  const Tensor qkv = test::random_bits(c.qkv(), DType::BF16, 200),
               x = test::random_bits(c.per_head(), DType::BF16, 201);
  const auto host = run_all(c, qkv, x, Stream::host());
  Tensor qkv_d = unaligned(c.qkv()), x_d = unaligned(c.per_head());
  qkv_d.copy_from(qkv);
  x_d.copy_from(x);
  Tensor q = unaligned(c.per_head()), k = unaligned(c.per_head()), v = unaligned(c.per_head()),
         dqkv = unaligned(c.qkv()), y = unaligned(c.tokens()), dx = unaligned(c.per_head());
  kernels::split_heads(qkv_d, 3, q, k, v);
  kernels::split_heads_bwd(v, q, k, dqkv);
  kernels::merge_heads(x_d, y);
  kernels::merge_heads_bwd(y, 3, dx);
  cuda::device_synchronize(0);
  const Tensor dev[] = {q, k, v, dqkv, y, dx};
  for (std::size_t i = 0; i < host.size(); ++i) EXPECT_EQ(test::bytes_of(dev[i]), test::bytes_of(host[i])) << i;
}

TEST(HeadsCuda, CountsOneLaunchPerCall) {
  GPPF_REQUIRE_GPU();
  const HeadsCase c{2, 4, 2, 8};
  const Tensor qkv = Tensor::zeros(c.qkv(), DType::BF16, kGpu), x = Tensor::zeros(c.per_head(), DType::BF16, kGpu);
  Tensor q = Tensor::empty(c.per_head(), DType::BF16, kGpu), k = Tensor::empty(c.per_head(), DType::BF16, kGpu),
         v = Tensor::empty(c.per_head(), DType::BF16, kGpu), dqkv = Tensor::empty(c.qkv(), DType::BF16, kGpu),
         y = Tensor::empty(c.tokens(), DType::BF16, kGpu), dx = Tensor::empty(c.per_head(), DType::BF16, kGpu);
  EXPECT_EQ(test::launches_of([&] { kernels::split_heads(qkv, 2, q, k, v); }), 1);
  EXPECT_EQ(test::launches_of([&] { kernels::split_heads_bwd(q, k, v, dqkv); }), 1);
  EXPECT_EQ(test::launches_of([&] { kernels::merge_heads(x, y); }), 1);
  EXPECT_EQ(test::launches_of([&] { kernels::merge_heads_bwd(y, 2, dx); }), 1);
  cuda::device_synchronize(0);
}

TEST(HeadsCuda, RejectsMixedDevices) {
  GPPF_REQUIRE_GPU();
  const HeadsCase c{2, 3, 2, 4};
  const Tensor qkv = Tensor::zeros(c.qkv(), DType::F32, kGpu);
  Tensor q = Tensor::empty(c.per_head(), DType::F32, kGpu), k = Tensor::empty(c.per_head(), DType::F32),
         v = Tensor::empty(c.per_head(), DType::F32, kGpu);
  test::expect_error_names([&] { kernels::split_heads(qkv, 2, q, k, v); }, "split_heads", "k");
  Tensor y = Tensor::empty(c.tokens(), DType::F32);
  test::expect_error_names([&] { kernels::merge_heads(q, y); }, "merge_heads", "y");
}

}  // namespace
}  // namespace gppf
