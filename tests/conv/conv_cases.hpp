#pragma once
// The convolution shapes every conv test runs: odd sizes, strides 1-2, pads 0-2, dilations 1-2,
// groups 1, 2 and depthwise, 1x1 fast paths (narrow and wide), with and without bias.
#include <ostream>
#include <string>
#include <vector>

#include "kernels/conv.hpp"
#include "kernels/ref/conv.hpp"
#include "tests/common/util.hpp"

namespace gppf::test {

struct ConvCase {
  std::string name;
  Shape x;  // [N,H,W,C]
  std::int64_t k, r, s;
  kernels::Conv2dParams p;
  bool bias;
  Shape w() const { return {k, r, s, x[3] / p.groups}; }
};

inline std::vector<ConvCase> conv_cases() {
  using P = kernels::Conv2dParams;
  return {
      {"k3s1p1_bias", {2, 7, 5, 3}, 4, 3, 3, P{1, 1, 1, 1, 1, 1, 1}, true},
      {"k3s2p0", {2, 7, 5, 3}, 5, 3, 3, P{2, 2, 0, 0, 1, 1, 1}, false},
      {"k3x2s2p2d2_g2_bias", {1, 9, 8, 4}, 6, 3, 2, P{2, 2, 2, 2, 2, 2, 2}, true},
      {"depthwise_k3p1_bias", {2, 7, 6, 5}, 5, 3, 3, P{1, 1, 1, 1, 1, 1, 5}, true},
      {"depthwise_x2_k5s2p2", {2, 9, 7, 3}, 6, 5, 5, P{2, 2, 2, 2, 1, 1, 3}, false},
      {"pointwise_bias", {2, 5, 7, 6}, 8, 1, 1, P{}, true},
      {"pointwise_g2", {2, 5, 7, 6}, 4, 1, 1, P{1, 1, 0, 0, 1, 1, 2}, false},
      {"pointwise_s2", {2, 7, 5, 3}, 5, 1, 1, P{2, 2, 0, 0, 1, 1, 1}, true},
      // A merged lego's grouped conv3 (4 inputs per group), a head's 11-class read-out, a wide 1x1.
      {"pointwise_narrow_in_g2", {3, 9, 11, 8}, 64, 1, 1, P{1, 1, 0, 0, 1, 1, 2}, false},
      {"pointwise_narrow_out_bias", {4, 16, 16, 32}, 11, 1, 1, P{}, true},
      // The host's own read-out gradients (<= 16 outputs from 32 or 64 inputs): pixel counts that
      // leave a tail of 1-3 after groups of 4.
      {"pointwise_few_out_tail", {3, 7, 9, 32}, 2, 1, 1, P{}, true},
      {"pointwise_few_out_c64", {2, 5, 7, 64}, 3, 1, 1, P{}, false},
      {"pointwise_wide_bias", {2, 5, 7, 24}, 20, 1, 1, P{}, true},
      {"asym_r2s3", {2, 8, 7, 7}, 3, 2, 3, P{1, 2, 2, 0, 2, 1, 1}, true},
      {"k7s2p3_stem", {1, 13, 11, 3}, 8, 7, 7, P{2, 2, 3, 3, 1, 1, 1}, false},
      // Enough im2col rows for several chunks in the GEMM fallback.
      {"chunked_k3p1_g2", {9, 32, 30, 16}, 12, 3, 3, P{1, 1, 1, 1, 1, 1, 2}, true},
  };
}

// gtest prints the case by name, not as bytes.
inline void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name; }

inline std::string conv_case_name(const testing::TestParamInfo<ConvCase>& info) { return info.param.name; }

}  // namespace gppf::test
