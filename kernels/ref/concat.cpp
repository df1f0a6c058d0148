#include "kernels/ref/concat.hpp"

#include <cstddef>
#include <utility>

namespace gppf::kernels::ref {
namespace {
std::int64_t total(const std::vector<std::int64_t>& channels) {
  std::int64_t t = 0;
  for (const std::int64_t c : channels) t += c;
  return t;
}
}  // namespace

Vec concat_channels(const std::vector<Vec>& xs, const std::vector<std::int64_t>& channels, std::int64_t rows) {
  const std::int64_t cols = total(channels);
  Vec y(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    std::int64_t offset = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      for (std::int64_t k = 0; k < channels[i]; ++k)
        y[static_cast<std::size_t>(r * cols + offset + k)] = xs[i][static_cast<std::size_t>(r * channels[i] + k)];
      offset += channels[i];
    }
  }
  return y;
}

std::vector<Vec> split_channels(const Vec& y, const std::vector<std::int64_t>& channels, std::int64_t rows) {
  const std::int64_t cols = total(channels);
  std::vector<Vec> xs;
  std::int64_t offset = 0;
  for (const std::int64_t c : channels) {
    Vec x(static_cast<std::size_t>(rows * c));
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t k = 0; k < c; ++k)
        x[static_cast<std::size_t>(r * c + k)] = y[static_cast<std::size_t>(r * cols + offset + k)];
    xs.push_back(std::move(x));
    offset += c;
  }
  return xs;
}

}  // namespace gppf::kernels::ref
