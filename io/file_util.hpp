#pragma once
// Small file helpers shared by the converters.
#include <cstdint>
#include <string>
#include <vector>

namespace gppf::io {

// PNG and JPEG files under `dir` (recursively), sorted by path.
std::vector<std::string> list_images(const std::string& dir);
std::vector<std::uint8_t> read_file(const std::string& path);

}  // namespace gppf::io
