#include "tests/common/util.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/counters.hpp"
#include "core/cuda_runtime.hpp"
#include "core/error.hpp"

namespace gppf::test {

std::vector<double> random_vector(std::size_t n, std::uint64_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

Tensor random_tensor(const Shape& shape, std::uint64_t seed, double lo, double hi) {
  return Tensor::from_vector(shape,
                             to_float(random_vector(static_cast<std::size_t>(shape_numel(shape)), seed, lo, hi)));
}

std::vector<double> to_double(const Tensor& t) {
  const auto f = t.to_float_vector();
  return {f.begin(), f.end()};
}

std::vector<float> to_float(const std::vector<double>& v) {
  std::vector<float> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](double x) { return static_cast<float>(x); });
  return out;
}

double max_rel_error(const std::vector<double>& a, const std::vector<double>& b, double floor) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0.0, scale = floor;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(a[i] - b[i]);
    if (std::isnan(d)) return INFINITY;
    diff = std::max(diff, d);
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

double max_rel_error(const Tensor& a, const std::vector<double>& b, double floor) {
  return max_rel_error(to_double(a), b, floor);
}

double max_rel_error(const Tensor& a, const Tensor& b, double floor) {
  return max_rel_error(to_double(a), to_double(b), floor);
}

bool have_gpu() { return cuda::available(); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::int64_t launches_of(const std::function<void()>& f) {
  const auto before = runtime::counters();
  f();
  return (runtime::counters() - before).launches;
}

}  // namespace gppf::test
