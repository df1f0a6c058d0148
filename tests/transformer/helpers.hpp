#pragma once
// Small helpers shared by the transformer op tests (tests/transformer/, tests/cuda/test_layernorm.cpp,
// tests/cuda/test_attention.cpp).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/counters.hpp"
#include "core/error.hpp"
#include "kernels/cast.hpp"
#include "tests/common/util.hpp"

namespace gppf::test {

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// a + b element-wise (the expected value of an accumulated gradient).
inline std::vector<double> plus(std::vector<double> a, const std::vector<double>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

// f throws one line naming the op and the offending tensor.
inline void expect_error_names(const std::function<void()>& f, const std::string& op, const std::string& what) {
  const std::string msg = error_of(f);
  EXPECT_NE(msg.find(op + ":"), std::string::npos) << "'" << msg << "' should name " << op;
  EXPECT_NE(msg.find(what), std::string::npos) << "'" << msg << "' should name " << what;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

// For the CUDA parity tests: f32 host values rounded through dtype (what the device will hold, as the
// host's f32 input), and the same values on the GPU in dtype.
inline Tensor rounded(const Tensor& host_f32, DType dtype) {
  return kernels::cast(kernels::cast(host_f32, dtype), DType::F32);
}
inline Tensor on_device(const Tensor& host_f32, DType dtype) {
  return kernels::cast(host_f32, dtype).to(Device::cuda(0));
}

}  // namespace gppf::test
