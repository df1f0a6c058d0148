#pragma once
// Plain references of kernels/concat.hpp: parts [rows, channels[i]] and their concatenation.
#include <cstdint>
#include <vector>

namespace gppf::kernels::ref {

using Vec = std::vector<double>;

Vec concat_channels(const std::vector<Vec>& xs, const std::vector<std::int64_t>& channels, std::int64_t rows);
std::vector<Vec> split_channels(const Vec& y, const std::vector<std::int64_t>& channels, std::int64_t rows);

}  // namespace gppf::kernels::ref
