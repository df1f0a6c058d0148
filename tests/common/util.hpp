#pragma once
// Seeded random data and error measures shared by the op, parity and optimizer tests.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.hpp"

namespace gppf::test {

// Uniform in [lo, hi), reproducible from the seed.
std::vector<double> random_vector(std::size_t n, std::uint64_t seed, double lo = -1.0, double hi = 1.0);
// A host f32 tensor filled from random_vector.
Tensor random_tensor(const Shape& shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0);
std::vector<double> to_double(const Tensor& t);
std::vector<float> to_float(const std::vector<double>& v);

// max|a - b| / max(max|b|, floor): the relative error of a whole output against its reference.
double max_rel_error(const std::vector<double>& a, const std::vector<double>& b, double floor = 1e-6);
double max_rel_error(const Tensor& a, const std::vector<double>& b, double floor = 1e-6);
double max_rel_error(const Tensor& a, const Tensor& b, double floor = 1e-6);

// True when a CUDA device is present; tests that need one GTEST_SKIP otherwise.
bool have_gpu();

// The message of the gppf::Error that f throws ("" when it throws none).
std::string error_of(const std::function<void()>& f);
// The launches f counts (core/counters.hpp).
std::int64_t launches_of(const std::function<void()>& f);

}  // namespace gppf::test

#define GPPF_REQUIRE_GPU()                                                                   \
  do {                                                                                       \
    if (!::gppf::test::have_gpu()) GTEST_SKIP() << "no CUDA device (or built without CUDA)"; \
  } while (0)
