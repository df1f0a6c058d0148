#include "io/convert.hpp"
#include "io/random.hpp"

namespace gppf::io {

std::string derive_split(std::uint64_t seed, std::int64_t index, double val_fraction, double test_fraction) {
  Rng rng(hash_seed({seed, static_cast<std::uint64_t>(index), 0x5a17ULL}));
  const double u = rng.uniform();
  if (u < test_fraction) return "test";
  if (u < test_fraction + val_fraction) return "val";
  return "train";
}

}  // namespace gppf::io

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "io/file_util.hpp"
#include "src/core/error.hpp"

namespace gppf::io {

std::vector<std::string> list_images(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (ext == ".png" || ext == ".jpg" || ext == ".jpeg") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  // A folder opens as a stream, and reading it throws std::ios_base::failure, not our Error.
  GPPF_CHECK(std::filesystem::is_regular_file(path), "cannot read ", path, ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  GPPF_CHECK(in, "cannot read ", path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace gppf::io
